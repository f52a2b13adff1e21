"""quiet_lightning drops Lightning's tips and the pytree warning, only inside the block."""

import logging
import warnings

from fcnkit.engine.quiet import quiet_lightning


def test_tips_dropped_inside_other_messages_kept(caplog):
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    caplog.set_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero")
    with quiet_lightning():
        rank_zero_info("💡 Tip: install something")
        rank_zero_info("GPU available: False")
    rank_zero_info("💡 Tip: after the block")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["GPU available: False", "💡 Tip: after the block"]


def test_pytree_warning_hidden_inside_only():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with quiet_lightning():
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning, stacklevel=2)
            warnings.warn("something else", UserWarning, stacklevel=2)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", DeprecationWarning, stacklevel=2)
    assert [str(w.message)[:14] for w in seen] == ["something else", "`isinstance(tr"]
