from export.cost_compare import compare


def test_two_bundles_are_timed_side_by_side(toy_bundle):
    result = compare([str(toy_bundle), str(toy_bundle)], seconds=1.0, repeats=2)
    first, second = result["bundles"]
    assert first["ratio_to_first"] == 1.0 and len(first["samples"]) == 2
    assert first["cpu_s_per_audio_s"] > 0 and second["cpu_s_per_audio_s"] > 0
