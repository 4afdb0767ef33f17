import shutil

from stream_s5.bundle import default_bundle_path, load_bundle, update_manifest


def test_update_manifest_edits_bundle_json_and_keeps_the_bundle_valid(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), copy)
    update_manifest(copy, lambda m: m.setdefault("provenance", {}).update(note="edited"))
    reloaded = load_bundle(copy)  # hashes still verify: bundle.json is not hashed
    assert reloaded.manifest["provenance"]["note"] == "edited"
    assert not list(copy.glob("*.tmp"))
