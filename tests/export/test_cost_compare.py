from export.cost_compare import compare


def test_two_bundles_are_timed_side_by_side(toy_bundle):
    result = compare([str(toy_bundle), str(toy_bundle)], seconds=1.0, repeats=2)
    first, second = result["bundles"]
    assert first["ratio_to_first"] == 1.0 and len(first["samples"]) == 2
    assert first["cpu_s_per_audio_s"] > 0 and second["cpu_s_per_audio_s"] > 0
    # the figures are the medians of the samples, and the ratio is the second median over the first
    import statistics

    for row in (first, second):
        assert len(row["samples"]) == 2 and row["cpu_s_per_audio_s"] == statistics.median(row["samples"])
    assert second["ratio_to_first"] == second["cpu_s_per_audio_s"] / first["cpu_s_per_audio_s"]
    assert 0.2 < second["ratio_to_first"] < 5  # the same bundle twice: the same cost within this machine's noise
