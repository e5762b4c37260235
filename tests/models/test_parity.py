"""Every reference case of the original PyTorch code reproduces its logits."""

import numpy as np
import pytest

from keras_pf.weights import load_state_dict, load_torch_weights

from conftest import ParityCase
import torch_format


def test_reproduces_original_logits(parity_case):
    model = parity_case.build()
    load_torch_weights(model, parity_case.checkpoint)
    logits = model.predict(parity_case.input_nhwc, verbose=0)
    assert logits.shape == parity_case.logits.shape
    np.testing.assert_allclose(logits, parity_case.logits, rtol=0, atol=1e-4)


def test_weights_argument_takes_a_pth_path(parity_case):
    """The same through `weights=<path>.pth`, the path users take."""
    model = parity_case.build(weights=str(parity_case.checkpoint))
    logits = model(parity_case.input_nhwc, training=False)
    np.testing.assert_allclose(np.asarray(logits), parity_case.logits, rtol=0, atol=1e-4)


def _floats(state, convert):
    return {k: convert(v) if v.dtype.kind == "f" else v for k, v in state.items()}


# layout -> (how the original state dict is re-saved, logits tolerance)
LAYOUTS = {
    # float32 -> float64 -> float32 is exact: the original tolerance
    "float64": (lambda s: _floats(s, lambda v: v.astype(np.float64)), 1e-4),
    # weights rounded to 8 significant bits: about 2**-9 relative error per weight
    "bfloat16": (lambda s: _floats(s, torch_format.BFloat16), None),
    "ema_dataparallel_with_metadata": (lambda s: {
        "state_dict_ema": {"module." + k: v for k, v in s.items()}, "epoch": 3,
        "meta_info": "ema"}, 1e-4),
    "model_with_meta_info": (lambda s: {"model": {**s, "meta_info": "trained"}}, 1e-4),
}


@pytest.mark.parametrize("case_name", ["resnet_hybrid_64", "vit_max_64"])
def test_reproduces_original_logits_through_dtypes_and_wrappers(tmp_path, case_name):
    case = ParityCase(case_name)
    state = load_state_dict(case.checkpoint)
    model = case.build()
    for layout, (resave, atol) in LAYOUTS.items():
        path = torch_format.save(resave(state), tmp_path / f"{layout}.pth")
        logits = np.asarray(load_torch_weights(model, path)(case.input_nhwc, training=False))
        if atol is None:  # bfloat16 (seen: 0.3-0.5% of the range): 2% of the logits' range
            atol = 0.02 * np.abs(case.logits).max()
        np.testing.assert_allclose(logits, case.logits, rtol=0, atol=atol, err_msg=layout)
        print(layout, np.abs(logits - case.logits).max(), np.abs(case.logits).max())
