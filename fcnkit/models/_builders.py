"""One factory for the registry builders of the all-convolutional families (``allconv``,
``allconv_cls``, ``resallconv``, ``resallconv_cls``).

Their builders differ only in the model class, the defaults and the options fixed by the family,
so each is made here from those three facts rather than written out as a ``def`` that repeats the
argument list twice (signature, then the call). The builder's ``__signature__`` is what the
registry reads (keyword checks, ``model_info`` defaults, the spec), so it lists the same keyword-only
arguments, in the same order, that a hand-written builder would.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["model_builder", "SEGMENTER_HEAD"]

M = TypeVar("M", bound=nn.Module)

# the head options of every segmenter (AllConvNet and its subclasses), after the body options
SEGMENTER_HEAD: dict[str, Any] = {"output": "dense", "learn_upsampling": False, "skips": True}

_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def model_builder(
    model_class: type[M],
    name: str,
    doc: str,
    defaults: dict[str, Any],
    fixed: dict[str, Any] | None = None,
) -> Callable[..., M]:
    """A keyword-only builder ``name(*, num_classes, in_channels=3, **defaults)`` returning
    ``model_class(num_classes, in_channels, **options, **fixed)``.

    ``defaults`` are the builder's arguments (each annotated with its default's type name); ``fixed``
    are passed to the model but are not arguments (``resallconv`` is "same"-padded only).
    """
    signature = inspect.Signature(
        [
            inspect.Parameter("num_classes", _KEYWORD, annotation="int"),
            inspect.Parameter("in_channels", _KEYWORD, default=3, annotation="int"),
        ]
        + [
            inspect.Parameter(key, _KEYWORD, default=value, annotation=type(value).__name__)
            for key, value in defaults.items()
        ],
        return_annotation=model_class.__name__,  # string annotations, as under postponed evaluation
    )
    fixed_options = dict(fixed or {})

    def build(**kwargs: Any) -> M:
        bound = signature.bind(**kwargs)  # TypeError on an unknown or missing argument, as from a def
        bound.apply_defaults()
        options = dict(bound.arguments)
        return model_class(options.pop("num_classes"), options.pop("in_channels"), **options, **fixed_options)

    # PEP 362: inspect.signature (the registry) reads it; typeshed does not declare it on functions
    build.__signature__ = signature  # type: ignore[attr-defined]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    build.__module__ = model_class.__module__  # the family's module, as for a def written there
    return build
