"""Weight interpolation of two checkpoints (export/blend.py)."""

import json

import pytest

torch = pytest.importorskip("torch")

from export.blend import blend_state, main as blend_main  # noqa: E402
from export.train import main as train_main  # noqa: E402


def test_blend_is_the_straight_line_between_the_two_weight_vectors():
    a = {"w": torch.zeros(3), "n": torch.tensor(7)}
    b = {"w": torch.tensor([2.0, 4.0, -2.0]), "n": torch.tensor(9)}
    out = blend_state(a, b, 0.25)
    assert torch.allclose(out["w"], torch.tensor([0.5, 1.0, -0.5])) and int(out["n"]) == 7
    assert torch.equal(blend_state(a, b, 0.0)["w"], a["w"]) and torch.equal(blend_state(a, b, 1.0)["w"], b["w"])
    with pytest.raises(ValueError, match="alpha"):
        blend_state(a, b, 1.5)
    with pytest.raises(ValueError, match="shapes"):
        blend_state(a, {"w": torch.zeros(4), "n": b["n"]}, 0.5)


def test_blended_checkpoint_exports_and_records_its_parents(tmp_path):
    for name, seed in (("a", "0"), ("b", "1")):
        train_main(["--preset", "test", "--out", str(tmp_path / name), "--quiet", "--seed", seed])
    out = tmp_path / "blend.pt"
    assert blend_main([str(tmp_path / "a" / "checkpoint.pt"), str(tmp_path / "b" / "checkpoint.pt"),
                       "--sed-alpha", "0.3", "--separator-alpha", "1.0", "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    key = next(k for k, v in a["sed"].items() if v.is_floating_point())
    assert torch.allclose(state["sed"][key], 0.7 * a["sed"][key] + 0.3 * b["sed"][key], atol=1e-6)
    assert all(torch.equal(state["separator"][k], b["separator"][k]) for k in b["separator"])
    assert json.loads(state["recipe_json"])["blend"]["sed_alpha"] == 0.3

    from export.bundle import main as bundle_main

    bundle_main(["--checkpoint", str(out), "--out", str(tmp_path / "bundle")])
    assert (tmp_path / "bundle" / "sed.onnx").exists()


def test_blend_refuses_a_missing_checkpoint_with_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        blend_main([str(tmp_path / "nope.pt"), str(tmp_path / "nope2.pt"), "--out", str(tmp_path / "x.pt")])
    assert exc.value.code == 2
