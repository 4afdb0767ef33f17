import numpy as np
import pytest

from stream_s5.bundle import load_bundle
from stream_s5.sessions import BoundSeparatorModel, SeparatorModel, choose_providers


def test_device_choice_falls_back_to_cpu_with_a_reason():
    providers, note = choose_providers("cpu")
    assert providers == ["CPUExecutionProvider"] and note == "cpu"
    providers, note = choose_providers("cuda")
    if providers[0] == "CPUExecutionProvider":
        assert providers == ["CPUExecutionProvider"] and "falling back to CPU" in note
    else:  # a machine with a usable GPU: CUDA first, the CPU behind it for the nodes CUDA lacks
        assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"] and note == "cuda"
    with pytest.raises(ValueError):
        choose_providers("tpu")


def test_io_bound_fixed_shape_separator_equals_plain_session():
    bundle = load_bundle()
    plain = SeparatorModel(bundle, ["CPUExecutionProvider"])
    bound = BoundSeparatorModel(bundle, ["CPUExecutionProvider"], slots=3)
    rng = np.random.default_rng(0)
    f = bundle.separator["n_fft"] // 2 + 1
    for batch in (1, 2, 3):
        feeds = (rng.standard_normal((batch, 1, 1, 2, f)).astype(np.float32),
                 rng.standard_normal((batch, 1, 2, f)).astype(np.float32),
                 np.eye(18, dtype=np.float32)[:batch], rng.random((batch, 1)).astype(np.float32),
                 np.arange(batch, dtype=np.int64) % 3,
                 rng.standard_normal((batch, *plain.state_shape)).astype(np.float32))
        for a, b in zip(plain(*feeds), bound(*feeds)):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError):
        bound(*(np.zeros((4, *x.shape[1:]), x.dtype) for x in feeds))
