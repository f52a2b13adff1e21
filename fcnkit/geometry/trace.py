"""Analytic receptive fields by tracing the operations a model runs.

The model runs once on a meta-device input (no memory, no arithmetic) under a
``TorchFunctionMode`` that sees every torch call with its real arguments - convolutions,
pooling, interpolation, padding, slicing, additions, concatenations - whatever Python control
flow the forward has. Each activation carries an exact per-axis geometry (:class:`Axis`) from
the input to the output. Module names come from forward hooks, for the per-layer table.

Operations that make an output cell depend on the whole image (global pooling, normalisation
over H and W, attention, size-dependent resizing) are recorded as *blockers* and travel with
the activations that depend on them.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import replace
from fractions import Fraction

import torch
from torch.overrides import TorchFunctionMode

from fcnkit.geometry.axis import (
    Taps,
    conv_taps,
    interpolate_taps,
    transposed_taps,
)
from fcnkit.geometry.meta_shapes import meta_shortcut
from fcnkit.geometry.result import LayerGeometry, number
from fcnkit.geometry.trace_state import State, Unsupported, union
from fcnkit.geometry.traced_ops import (
    GLOBAL_OPS,
    NOT_2D_OPS,
    POINTWISE_OPS,
    POOL_OPS,
    REDUCTION_OPS,
    RESAMPLE_OPS,
    as_pair,
    bind_args,
)

__all__ = ["State", "Tracer", "Unsupported"]


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


class Tracer(TorchFunctionMode):
    """Runs alongside a forward pass and keeps a :class:`State` per activation.

    ``names`` is the stack of ``(module name, is_leaf)`` kept by forward hooks; ``rows`` collects
    the table. Activations are held by weak references, so the trace also sees when the forward
    frees them: ``peak`` is the largest number of activation elements alive at once (views not
    counted), the memory a real forward of the same size needs.
    """

    def __init__(self):
        super().__init__()
        self.states: dict = {}
        self.names: list = []
        self.rows: list = []
        self.live = 0
        self.peak = 0

    def watch(self, tensor: torch.Tensor, state: State) -> None:
        key = id(tensor)
        hit = self.states.get(key)
        if hit is not None and hit[0]() is tensor:  # in-place op: same tensor, new geometry
            self.states[key] = (hit[0], state, hit[2])
            return
        n = 0 if tensor._base is not None else tensor.numel()
        self.states[key] = (weakref.ref(tensor, functools.partial(self._gone, key)), state, n)
        self.live += n
        self.peak = max(self.peak, self.live)

    def _gone(self, key: int, ref) -> None:
        hit = self.states.get(key)
        if hit is not None and hit[0] is ref:
            del self.states[key]
            self.live -= hit[2]

    def state(self, tensor) -> State | None:
        hit = self.states.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return hit[1] if hit is not None and hit[0]() is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = meta_shortcut(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        ins = [t for t in _tensors((args, kwargs)) if self.state(t) is not None]
        outs = list(_tensors(out))
        if not ins or not outs:  # constants, parameters, x.shape, x.size()
            return out
        name = getattr(func, "__name__", str(func))
        try:
            state = self._rule(name, args, kwargs, ins, out)
        except Unsupported as exc:
            raise Unsupported(f"layer '{self._where(name)}': {exc}") from None
        if state is not None:
            for t in outs:
                self.watch(t, state)
        return out

    # -- rules ------------------------------------------------------------------------------
    def _rule(self, name, args, kwargs, ins, out) -> State | None:
        first = self.state(ins[0])
        assert first is not None  # the caller passes only watched tensors (states known) in ins
        x = ins[0]
        if name in NOT_2D_OPS:
            raise Unsupported(f"'{name}': receptive_field follows 2-D networks only")
        if name == "conv2d":
            a = bind_args(name, args, kwargs)
            k = tuple(a["weight"].shape[-2:])
            s, d = as_pair(a.get("stride"), (1, 1)), as_pair(a.get("dilation"), (1, 1))
            p = a.get("padding", 0)
            p = tuple(d[i] * (k[i] - 1) // 2 for i in (0, 1)) if p == "same" else (0, 0) if p == "valid" else as_pair(p)
            taps = [conv_taps(k[i], s[i], p[i], d[i]) for i in (0, 1)]
            return self._apply(first, taps, name, out, k, s, p, d)
        if name == "conv_transpose2d":
            a = bind_args(name, args, kwargs)
            k = tuple(a["weight"].shape[-2:])
            s, p, d = (as_pair(a.get(n), (dv, dv)) for n, dv in (("stride", 1), ("padding", 0), ("dilation", 1)))
            taps = [transposed_taps(k[i], s[i], p[i], d[i]) for i in (0, 1)]
            return self._apply(first, taps, name, out, k, s, p, d)
        if name in POOL_OPS:
            a = bind_args(name, args, kwargs)
            k = as_pair(a["kernel_size"])
            s, p, d = as_pair(a.get("stride"), k), as_pair(a.get("padding"), (0, 0)), as_pair(a.get("dilation"), (1, 1))
            taps = [conv_taps(k[i], s[i], p[i], d[i]) for i in (0, 1)]
            return self._apply(first, taps, name.strip("_"), out, k, s, p, d)
        if name in RESAMPLE_OPS:
            return self._resample(name, args, kwargs, first, x, out)
        if name == "pad":
            a = bind_args(name, args, kwargs)
            pad = list(a["pad"]) + [0] * 4
            if a.get("mode", "constant") == "circular":
                first = first.with_blocker(f"'{self._where(name)}' pads circularly (wraps the image around)")
            taps = [Taps(1, 1, ((-int(pad[2]),),)), Taps(1, 1, ((-int(pad[0]),),))]
            return self._apply(first, taps, "pad", out, None, None, (int(pad[2]), int(pad[0])), None)
        if name == "__getitem__" and isinstance(out, torch.Tensor):
            return self._getitem(args[1], first, x, out)
        if name == "narrow" and isinstance(out, torch.Tensor):
            dim, start = (list(args[1:3]) + [kwargs.get("dim"), kwargs.get("start")])[:2]
            axis = int(dim) % x.dim() - (x.dim() - 2)
            if axis < 0:
                return self._pointwise(name, ins, out)
            taps = [Taps(1, 1, ((int(start) if i == axis else 0,),)) for i in (0, 1)]
            return self._apply(first, taps, "crop", out, None, None, None, None)
        if name in ("cat", "concat", "concatenate", "stack"):
            tensors = args[0] if args else kwargs["tensors"]
            dim = int(args[1] if len(args) > 1 else kwargs.get("dim", 0))
            nd = tensors[0].dim() + (1 if name == "stack" else 0)
            if dim % nd >= nd - 2:
                raise Unsupported(f"'{name}' joins maps along a spatial axis; cannot follow that")
            return self._pointwise(name, ins, out, record=True)
        if name in ("pixel_shuffle", "pixel_unshuffle"):
            r = int(args[1] if len(args) > 1 else next(iter(kwargs.values())))
            t = Taps(r, 1, ((0,),) * r) if name == "pixel_shuffle" else Taps(1, r, (tuple(range(r)),))
            return self._apply(first, [t, t], name, out, (r, r), (r, r), None, None)
        if name in REDUCTION_OPS and not (len(args) > 1 and isinstance(args[1], torch.Tensor)):
            pos = 2 if name == "norm" else 1  # torch.norm(input, p, dim)
            dim = args[pos] if len(args) > pos else kwargs.get("dim")
            dims = range(x.dim()) if dim is None else [dim] if isinstance(dim, int) else list(dim)
            if any(int(d) % x.dim() >= x.dim() - 2 for d in dims):
                return replace(
                    first.with_blocker(f"'{self._where(name)}' reduces over the spatial axes (global pooling)"),
                    whole=True,
                )
            return self._pointwise(name, ins, out)
        if name in ("softmax", "log_softmax"):
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            if dim is not None and int(dim) % x.dim() >= x.dim() - 2:
                return first.with_blocker(f"'{self._where(name)}' normalises over a spatial axis")
            return self._pointwise(name, ins, out)
        if name == "batch_norm":
            if bind_args(name, args, kwargs).get("training"):
                first = first.with_blocker("BatchNorm in training mode uses batch statistics; call model.eval()")
            return self._pointwise(name, ins, out, base=first)
        if name == "layer_norm" and x.dim() >= 3:
            return first.with_blocker(f"'{self._where(name)}' is LayerNorm over the spatial axes")
        if name in ("permute", "transpose", "swapaxes", "movedim", "t"):
            return self._permute(name, args, kwargs, ins, x, out)
        if name in GLOBAL_OPS:
            what = "normalises over the whole image" if "norm" in name else "mixes all positions (global)"
            if name.startswith("adaptive") and isinstance(out, torch.Tensor) and out.shape[-2:] == x.shape[-2:]:
                return self._pointwise(name, ins, out)
            state = first.with_blocker(f"'{self._where(name)}' ({name}) {what}")
            return replace(state, whole=True) if name.startswith("adaptive") else state
        return self._pointwise(name, ins, out)

    def _apply(self, state, taps, op, out, k, s, p, d) -> State:
        if state.whole:  # layers after global pooling still see the whole image
            self._record(op, state, out, k, s, p, d)
            return state
        try:
            axes = tuple(a.apply(t) for a, t in zip(state.axes, taps))
        except ValueError as exc:
            raise Unsupported(str(exc)) from None
        new = replace(state, axes=axes)
        self._record(op, new, out, k, s, p, d)
        return new

    def _pointwise(self, name, ins, out, record=False, base=None) -> State:
        states = [s for s in (self.state(t) for t in ins) if s is not None]
        state = base or states[0]
        for other in states[1:]:
            state = state.merged(other)
        o = next(_tensors(out), None)
        if o is None or o.dim() < 2:
            return state.with_blocker(f"'{self._where(name)}' drops the spatial axes")
        for t in ins:
            if t.dim() >= 2 and tuple(t.shape[-2:]) != tuple(o.shape[-2:]):
                state = state.with_blocker(
                    f"'{self._where(name)}' broadcasts a {t.shape[-2]}x{t.shape[-1]} map over "
                    f"{o.shape[-2]}x{o.shape[-1]}"
                )
        if name not in POINTWISE_OPS and name not in REDUCTION_OPS:
            state = replace(state, notes=union(state.notes, (f"'{self._where(name)}' ({name}) traced as pointwise",)))
        if record or len(states) > 1:
            self._record(name.strip("_"), state, out, None, None, None, None)
        return state

    def _resample(self, name, args, kwargs, state, x, out) -> State:
        a = bind_args("interpolate" if name != "upsample" else name, args, kwargs)
        mode = {"upsample_bilinear": "bilinear", "upsample_nearest": "nearest"}.get(name, a.get("mode", "nearest"))
        align = bool(a.get("align_corners")) or name == "upsample_bilinear"
        sf = a.get("scale_factor")
        taps, where = [], self._where(name)
        for i in (0, 1):
            n_in, n_out = int(x.shape[-2 + i]), int(out.shape[-2 + i])
            corners = align and mode != "nearest" and n_out > 1
            if sf is not None and not a.get("recompute_scale_factor") and not corners:
                f = sf[i] if isinstance(sf, (list, tuple)) else sf
                ratio = 1 / Fraction(float(f)).limit_denominator(10**6)
            else:
                # align_corners maps the corner cells onto each other: cell n reads n * (in-1)/(out-1), a
                # ratio that depends on the size: traced with the nominal in/out (the blocker says so)
                ratio = Fraction(n_in - 1, n_out - 1) if corners else Fraction(n_in, n_out)
                if ratio.numerator != 1 and ratio.denominator != 1 and not state.whole:
                    state = state.with_blocker(
                        f"'{where}' resizes by {n_out}/{n_in}{' (align_corners)' if corners else ''}, "
                        "a ratio that depends on the image size"
                    )
                    if corners:
                        ratio, corners = Fraction(n_in, n_out), False
            taps.append(interpolate_taps(ratio, "area" if mode == "area" else mode, corners))
        return self._apply(
            state, taps, mode if name != "interpolate" else f"interpolate-{mode}", out, None, None, None, None
        )

    def _getitem(self, idx, state, x, out) -> State:
        idx = idx if isinstance(idx, tuple) else (idx,)
        if any(i is None or isinstance(i, (torch.Tensor, list, bool)) for i in idx):
            if out.dim() >= 2 and out.shape[-2:] == x.shape[-2:] and not any(i is None for i in idx[-2:]):
                return state
            raise Unsupported("advanced indexing that moves the spatial axes; cannot follow that")
        if Ellipsis in idx:
            k = idx.index(Ellipsis)
            idx = idx[:k] + (slice(None),) * (x.dim() - len(idx) + 1) + idx[k + 1 :]
        idx = idx + (slice(None),) * (x.dim() - len(idx))
        taps, changed = [], False
        for i, item in enumerate(idx[-2:]):
            if not isinstance(item, slice):
                raise Unsupported("indexing picks a single row or column")
            start, _, step = item.indices(int(x.shape[-2 + i]))
            if step < 1:
                raise Unsupported("slicing with a negative step flips the image")
            changed |= start != 0 or step != 1
            taps.append(Taps(1, step, ((start,),)))
        if not changed:
            return state
        steps = tuple(t.r for t in taps)  # a crop is a negative padding (F.pad's convention)
        return self._apply(
            state, taps, "crop", out, None, steps if steps != (1, 1) else None, tuple(-t.taps[0][0] for t in taps), None
        )

    def _permute(self, name, args, kwargs, ins, x, out) -> State:
        nd = x.dim()
        if name == "permute":
            dims = args[1:] if len(args) > 2 or not isinstance(args[1], (list, tuple)) else args[1]
            dims = [int(d) % nd for d in (dims or kwargs.get("dims"))]
            keeps = dims[-2:] == [nd - 2, nd - 1]
        elif name == "t":
            keeps = nd < 2
        else:
            pair = [int(d) % nd for d in (list(args[1:3]) or list(kwargs.values())[:2])]
            keeps = pair[0] == pair[1] or max(pair) < nd - 2
        if not keeps:
            raise Unsupported(f"'{name}' moves the spatial axes (channels-last layers are not traced)")
        return self._pointwise(name, ins, out)

    # -- bookkeeping -----------------------------------------------------------------------
    def _where(self, op: str) -> str:
        """The innermost module's name; for ops in a container's own forward, ``name.op``."""
        if not self.names:
            return op
        name, leaf = self.names[-1]
        return name if leaf and name else f"{name}.{op}" if name else op

    def _record(self, op, state, out, k, s, p, d) -> None:
        o = next(_tensors(out), None)
        summ = [a.summary() for a in state.axes]
        self.rows.append(
            LayerGeometry(
                name=self._where(op),
                op=op,
                kernel=k,
                stride=s,
                padding=p,
                dilation=d,
                rf=tuple(number(v[0]) for v in summ),
                jump=tuple(number(v[1]) for v in summ),
                offset=tuple(number(v[2]) for v in summ),
                shape=tuple(int(v) for v in o.shape[-2:]) if o is not None and o.dim() >= 2 else None,
            )
        )
