"""Every reference case of the original PyTorch code reproduces its logits."""

import numpy as np

from keras_pf.weights import load_torch_weights


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
