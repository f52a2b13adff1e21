"""The training configuration: one dataclass, read from YAML and/or CLI flags.

A YAML file (``fcnkit train --config FILE``) uses the same keys as the CLI flags (``batch_size``
or ``batch-size``); flags given on the command line override the file; anything unset keeps the
default below. Unknown keys and bad values are :class:`~fcnkit.errors.InputError` naming the key
and the fix. The resolved config (defaults filled in, see :meth:`TrainConfig.resolved`) is saved
in every run as ``config.yaml`` and inside each checkpoint's ``config.json`` (``train``).

Optimizers (``optimizer``):
  - ``adam`` (default): Adam, ``lr`` defaults to 1e-3.
  - ``sgd``: SGD with ``momentum`` (default 0.9), ``lr`` defaults to 1e-2.
  - ``heavy``: the FCN paper's "heavy learning" (Sec. 4.2 / Shelhamer et al.): SGD with
    batch size 1 and momentum 0.99, so each update sees one image but the momentum averages
    about 100 of them. It sets ``batch_size: 1`` and ``momentum: 0.99`` (giving other values is
    an error) and ``lr`` defaults to 1e-4: the paper's 1e-10 is for a loss SUMMED over the
    ~250,000 pixels of a PASCAL image, and this loss is a per-pixel mean (1e-10 x 250k = 2.5e-5;
    1e-4 suits the smaller images fcnkit targets).

Tasks (``task``): ``segmentation`` (default) or ``classification`` (see
:mod:`fcnkit.engine.classification`; ``sizes`` trains at several input sizes, one per batch).
``model`` defaults to ``allconv`` for segmentation and ``allconv_cls`` for classification.
``init_from`` initialises the model from any fcnkit checkpoint or run folder (tensors whose names
and shapes match, see :mod:`fcnkit.app.init_from`); unlike ``resume`` it starts a new run.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fcnkit.errors import InputError, MissingFileError, did_you_mean

__all__ = ["TrainConfig", "load_config", "save_config", "OPTIMIZERS", "PRECISIONS"]

OPTIMIZERS = ("adam", "sgd", "heavy")
PRECISIONS = ("32", "16-mixed", "bf16-mixed")
DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("none", "cosine", "poly")  # fcnkit.training.schedules (poly: power 0.9)
LOGGERS = ("csv", "tensorboard")  # tensorboard: TensorBoard event files in RUN/logs/ besides the CSV
# augment: torchvision v2 augmentations, see fcnkit.data.augment (imported lazily: torchvision is heavy)
_DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2, "heavy": 1e-4}


@dataclass
class TrainConfig:
    """All the knobs of ``fcnkit train``; ``None`` means "the default for the other settings"."""

    data: str | None = None  # dataset name (fcnkit data list) or folder
    data_options: dict = field(default_factory=dict)  # passed to load_dataset(**data_options)
    # a dataset folder is stored absolute (a run works from any working directory) and relative to
    # the run folder (a moved project still finds it); see resolved()
    data_relative: str | None = None
    val_fraction: float | None = None  # folder datasets: seeded split (data option, seed = seed)
    test_fraction: float | None = None
    val_data_options: dict = field(default_factory=dict)  # override data_options for val/test (e.g. count)
    val_split: str = "val"
    model: str | None = None  # default: allconv (segmentation), allconv_cls (classification)
    model_options: dict = field(default_factory=dict)  # passed to build_model(**model_options)
    weights: str | None = None  # initial backbone weights file (not part of the model spec)
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (None: epochs decide)
    batch_size: int | None = None  # default 8 (heavy: 1)
    lr: float | None = None  # default per optimizer, see module docstring
    optimizer: str = "adam"
    momentum: float | None = None  # SGD momentum, default 0.9 (heavy: 0.99)
    weight_decay: float = 0.0
    lr_schedule: str = "none"  # none (constant, as FCN) | cosine | poly (per step, down to 0 at the last step)
    warmup_steps: int = 0  # linear warmup over the first N optimizer steps (fcnkit.training.schedules)
    val_every_n_steps: int | None = None  # validate (and write best/, last/) every N steps, not per epoch
    logger: str = "csv"  # csv | tensorboard (both write metrics.csv; the lr is logged as lr-<optimizer>)
    loss: str = "ce"  # ce | dice | focal | ce+dice (fcnkit.training.losses.segmentation_loss)
    backbone: str | None = None  # fcn8s/16s/32s backbone (default allconv; see `fcnkit models`)
    class_weights: str = "none"  # none | inverse | median
    precision: str = "32"  # 32 | 16-mixed | bf16-mixed
    devices: int = 1  # > 1: DDP (one process per device; also under torchrun)
    num_workers: int = 0
    threads: int | None = None  # torch intra-op CPU threads during training (None: torch's default)
    seed: int = 0
    device: str = "auto"  # auto (GPU when present) | cpu | cuda
    out: str | None = None  # run folder; default runs/<model>-<data>
    resume: str | None = None  # a run folder to continue (epoch, step, optimizer, best score)
    overwrite: bool = False  # allow a fresh run into a folder that holds one
    augment: bool | list = False  # false | true (= [flip, scale]) | a list of fcnkit.data.augment's names
    regime: dict = field(default_factory=lambda: {"name": "whole"})
    log_every_n_steps: int = 10
    task: str = "segmentation"  # segmentation | classification
    init_from: str | None = None  # checkpoint or run folder to initialise the model from (a new run)
    sizes: list | None = None  # classification: train at these sizes (pixels or [h, w]), one per batch
    sync_batchnorm: bool = False  # DDP: BatchNorm statistics over all processes (Lightning's sync_batchnorm)
    checkpoint_every_n_steps: int | None = 100  # also write trainer.ckpt every N steps (None: only per epoch)
    divergence_factor: float = 100.0  # stop when the loss exceeds its running median by this factor ...
    divergence_patience: int = 20  # ... for this many steps in a row (fcnkit.engine.module.LossGuard)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping, checking every key and value (``source`` names it in errors)."""
        cfg = cls()
        cfg.update(values, source)
        return cfg

    def update(self, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """Set ``values`` (keys with ``-`` or ``_``) after checking them; returns ``self``."""
        names = [f.name for f in dataclasses.fields(self)]
        for raw_key, value in values.items():
            key = str(raw_key).replace("-", "_")
            if key not in names:
                raise InputError(
                    f"{source}: unknown key '{raw_key}'{did_you_mean(key, names)}; valid keys: {', '.join(names)}"
                )
            setattr(self, key, _check(key, value, source))
            self.__dict__.setdefault("_given", set()).add(key)
        return self

    @property
    def given_keys(self) -> frozenset[str]:
        """The keys set through :meth:`update` (a config file, flags, a mapping), whatever their
        value: a resume applies them even when they equal the default."""
        return frozenset(self.__dict__.get("_given", ()))

    def resolved(self) -> TrainConfig:
        """A copy with the per-optimizer defaults filled in and cross-key rules checked."""
        cfg = dataclasses.replace(
            self,
            data_options=dict(self.data_options),
            model_options=dict(self.model_options),
            val_data_options=dict(self.val_data_options),
            regime=dict(self.regime),
        )
        if cfg.data is None:
            raise InputError(
                "no training data: pass --data NAME|PATH (see 'fcnkit data list') or set data: in the config"
            )
        if cfg.model is None:
            cfg.model = "allconv_cls" if cfg.task == "classification" else "allconv"
        if cfg.sizes and cfg.task != "classification":
            raise InputError(
                "sizes resizes classification inputs; "
                "for segmentation use augment: [scale], or set task: classification"
            )
        if cfg.task == "classification" and cfg.regime.get("name", "whole") != "whole":
            raise InputError(
                f"regime '{cfg.regime.get('name')}' is a segmentation regime; drop it for task: classification"
            )
        if cfg.optimizer == "heavy":
            for key, want in (("batch_size", 1), ("momentum", 0.99)):
                have = getattr(cfg, key)
                if have is not None and have != want:
                    raise InputError(
                        f"optimizer heavy means {key} {want}, got {have}; drop {key} or use optimizer: sgd"
                    )
                setattr(cfg, key, want)
        cfg.batch_size = 8 if cfg.batch_size is None else cfg.batch_size
        cfg.momentum = 0.9 if cfg.momentum is None else cfg.momentum
        cfg.lr = _DEFAULT_LR[cfg.optimizer] if cfg.lr is None else cfg.lr
        if cfg.backbone is not None:
            given = cfg.model_options.get("backbone", cfg.backbone)
            if given != cfg.backbone:
                raise InputError(f"backbone {cfg.backbone!r} and model_options backbone={given!r} disagree; give one")
            cfg.model_options["backbone"] = cfg.backbone
        if cfg.loss != "ce" and cfg.task != "segmentation":
            raise InputError(f"loss {cfg.loss} is a segmentation loss; use loss: ce for task: classification")
        from fcnkit.data.augment import DEFAULT_AUGMENTATIONS

        cfg.augment = list(DEFAULT_AUGMENTATIONS) if cfg.augment is True else list(cfg.augment or [])
        if cfg.out is None:
            cfg.out = cfg.resume if cfg.resume else str(Path("runs") / f"{cfg.model}-{Path(str(cfg.data)).name}")
        _absolute_data(cfg)
        for key in ("val_fraction", "test_fraction"):
            if getattr(cfg, key) is not None:
                cfg.data_options.setdefault(key, getattr(cfg, key))
                cfg.data_options.setdefault("split_seed", cfg.seed)
        # validate the regime now, so a typo fails before any data is read
        from fcnkit.training.regimes import build_regime

        regime = build_regime(cfg.regime)
        if regime.name == "class-balanced" and cfg.class_weights != "none":
            raise InputError(
                "regime class-balanced already balances the classes; set class_weights: none (or use regime: whole)"
            )
        cfg.regime = regime.options()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _absolute_data(cfg: TrainConfig) -> None:
    """A dataset folder (made absolute by ``_check``) also gets ``data_relative``: to the run folder."""
    if cfg.data_relative is None and Path(str(cfg.data)).is_absolute() and Path(str(cfg.data)).exists():
        cfg.data_relative = os.path.relpath(str(cfg.data), Path(str(cfg.out)).resolve())


def _data_path(value: str) -> str:
    """A dataset FOLDER given relative to the working directory -> absolute; names stay names."""
    from fcnkit.data.registry import list_datasets

    path = Path(value).expanduser()
    if value in list_datasets() or not path.exists():
        return value  # a built-in name, or load_dataset says what is wrong
    return str(path.resolve())


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- YAML file ``path`` <- ``overrides`` (CLI flags; ``None`` values are skipped)."""
    cfg = TrainConfig()
    if path is not None:
        cfg.update(_read_yaml(Path(path)), source=str(path))
    if overrides:
        cfg.update({k: v for k, v in overrides.items() if v is not None}, source="command line")
    return cfg


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML, atomically."""
    import yaml

    from fcnkit.utils.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise MissingFileError(f"{path}: config file not found; check the --config path")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (not UTF-8); give a YAML config such as 'epochs: 5'") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise InputError(f"{path}: not valid YAML ({first}); fix the syntax") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise InputError(f"{path}: expected a mapping of keys (e.g. 'epochs: 5'), got a {type(values).__name__}")
    return values


# --- value checks: (kind, extra) per key --------------------------------------------------------
_INT_MIN = {
    "warmup_steps": 0,
    "val_every_n_steps": 1,
    "threads": 1,
    "epochs": 1,
    "max_steps": 1,
    "batch_size": 1,
    "devices": 1,
    "num_workers": 0,
    "seed": 0,
    "log_every_n_steps": 1,
    "checkpoint_every_n_steps": 1,
    "divergence_patience": 1,
}
_FLOAT_MIN = {
    "divergence_factor": (1.0, False),
    "lr": (0.0, False),
    "momentum": (0.0, True),
    "weight_decay": (0.0, True),
    "val_fraction": (0.0, True),
    "test_fraction": (0.0, True),
}  # (min, inclusive)
_CHOICES = {
    "optimizer": OPTIMIZERS,
    "class_weights": ("none", "inverse", "median"),
    "precision": PRECISIONS,
    "device": DEVICES,
    "task": ("segmentation", "classification"),
    "lr_schedule": LR_SCHEDULES,
    "logger": LOGGERS,
    "loss": ("ce", "dice", "focal", "ce+dice"),
}
_OPTIONAL = {
    "val_every_n_steps",
    "backbone",
    "threads",
    "data",
    "data_relative",
    "val_fraction",
    "test_fraction",
    "weights",
    "max_steps",
    "batch_size",
    "lr",
    "momentum",
    "out",
    "resume",
    "init_from",
    "model",
    "sizes",
    "checkpoint_every_n_steps",
}
_STRINGS = {"backbone", "data", "data_relative", "weights", "out", "resume", "init_from", "model", "val_split"}
_DICTS = {"data_options", "val_data_options", "model_options"}


def _check(key: str, value: Any, source: str) -> Any:
    where = f"{source}: {key}"
    if value is None and key in _OPTIONAL:
        return None
    if key in _INT_MIN:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)
            else:
                raise InputError(f"{where} must be a whole number, got {value!r}; e.g. {key}: {max(_INT_MIN[key], 1)}")
        if value < _INT_MIN[key]:
            raise InputError(f"{where} must be >= {_INT_MIN[key]}, got {value}; raise it")
        return value
    if key in _FLOAT_MIN:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{where} must be a number, got {value!r}; e.g. {key}: 0.001") from None
        low, inclusive = _FLOAT_MIN[key]
        if isinstance(value, bool) or not math.isfinite(number) or number < low or (number == low and not inclusive):
            raise InputError(
                f"{where} must be a finite number {'>=' if inclusive else '>'} {low:g}, got {value!r}; fix the value"
            )
        if key in ("momentum", "val_fraction", "test_fraction") and number >= 1:
            raise InputError(f"{where} must be below 1, got {value!r}; use e.g. {0.9 if key == 'momentum' else 0.2}")
        return number
    if key in _CHOICES:
        text = str(value)
        if text not in _CHOICES[key]:
            raise InputError(
                f"{where}: unknown value '{text}'{did_you_mean(text, _CHOICES[key])}; "
                f"use one of {', '.join(_CHOICES[key])}"
            )
        return text
    if key in _DICTS:
        if not isinstance(value, dict):
            raise InputError(f"{where} must be a mapping, got {value!r}; e.g. {key}: {{size: 64}}")
        return dict(value)
    if key == "augment" and not _is_bool_like(value):
        from fcnkit.data.augment import check_augmentations

        return check_augmentations(value, where)  # a list, or "flip,rot90,crop:128" (the CLI's text)
    if key in ("augment", "overwrite", "sync_batchnorm"):
        if not _is_bool_like(value):
            raise InputError(f"{where} must be true or false, got {value!r}")
        return value if isinstance(value, bool) else value.lower() in ("true", "yes", "1")
    if key == "regime":
        if isinstance(value, str):
            return {"name": value}
        if not isinstance(value, dict):
            raise InputError(f"{where} must be a name or a mapping, got {value!r}; e.g. regime: {{name: whole}}")
        return dict(value)
    if key == "sizes":
        return _check_sizes(value, where)
    if key in _STRINGS:
        if isinstance(value, (dict, list, bool)):
            raise InputError(f"{where} must be a name or a path, got {value!r}")
        return _data_path(str(value)) if key == "data" else str(value)
    raise AssertionError(f"config key {key} has no check")  # a bug: every field needs one


def _check_sizes(value: Any, where: str) -> list | None:
    """``24,28,36`` (CLI text), ``[24, [28, 36]]`` -> a list of pixel counts / [h, w] pairs."""
    if isinstance(value, str):
        import yaml

        text = value.strip()
        try:
            value = yaml.safe_load(text if text.startswith("[") else f"[{text}]")
        except yaml.YAMLError:
            pass
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        pair = [item, item] if isinstance(item, int) else list(item) if isinstance(item, (list, tuple)) else []
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair):
            raise InputError(
                f"{where}: {item!r} is not a size; give pixels or [height, width] pairs, e.g. sizes: [24, 28, [28, 36]]"
            )
        out.append(item if isinstance(item, int) else pair)
    return out or None


def _is_bool_like(value: Any) -> bool:
    return isinstance(value, bool) or (
        isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0")
    )
