"""Published preference schemas read as published: eight small files built in the datasets' exact
schemas (tests/data/schema_files.py) are analysed as a person would (``mixdpo-kit analyze
--data FILE``), and every pair count, margin and drop is checked against values worked out by hand
from the files. Also: the K-wise pairing and rating choices, a column map, a hub name read through
the same code, a rating written as text, and the registry's contract."""
import json
import math
from pathlib import Path

import datasets
import numpy as np
import pytest

from mixdpo_kit.core.config import DataConfig
from mixdpo_kit.data.formats import FORMATS, PAIRINGS, SIGNALS, detect_format
from mixdpo_kit.data.loading import DataError, load_configured, mixed_type_check
from mixdpo_kit.interface.cli import main
from mixdpo_kit.margins.sources import compute_margins

from schema_files import texts, write_schema_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_schema_files(tmp_path_factory.mktemp("schemas"))


def analyze(files, name, tmp_path, capsys, *flags):
    out = tmp_path / name
    assert main(["analyze", "--data", str(files[name]), "--out", str(out), *flags]) == 0
    return json.loads((out / "data_report.json").read_text()), capsys.readouterr().out


def pairs(path, **data):
    ds, report = load_configured(DataConfig(source=str(path), **data))
    return ds, report


T = texts()

# name: (format line fragment, rows read, pairs kept, margins in row order, drops)
EXPECTED = {
    "argilla_dpo_mix": ("Argilla's DPO mixes", 4, 3, [3.0, 0.0, 2.0], {"chosen_rating missing or not a number": 1}),
    "argilla_ultrafeedback": ("Argilla's UltraFeedback", 3, 2, [2.0, 0.25],
                              {"rejected-rating missing or not a number": 1}),
    "helpsteer2": ("HelpSteer2", 4, 3, [2.0, 3.0, 1.0], {"no preference (strength 0): no chosen response": 1}),
    "helpsteer3": ("HelpSteer3", 4, 3, [3.0, 2.0, 1.0], {"no preference (strength 0): no chosen response": 1}),
    "shp": ("SHP", 4, 2, [5.0, 2.0], {"labels is not 0 or 1": 1, "score_ratio missing or not a number": 1}),
    # Nectar and raw UltraFeedback: the default pairing (best_vs_random) is checked below, by rule.
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_pairwise_schema_analyses_as_published(name, files, tmp_path, capsys):
    title, read, kept, margins, drops = EXPECTED[name]
    report, printed = analyze(files, name, tmp_path, capsys)
    assert report["format"] == name and (report["rows_read"], report["rows_kept"]) == (read, kept)
    assert report["pairing_choices"] == [] and "pairing " not in printed  # pairwise: nothing to choose
    assert report["dropped"] == drops
    assert printed.splitlines()[0].startswith(f"read as {title}") and "recognised by its columns" in printed
    ds, _ = pairs(files[name])
    np.testing.assert_allclose(compute_margins(ds, "data"), margins)
    assert f"margins: the data's own {report['margin_origin'].split('own ')[1].split(' ')[0]}" in printed


def test_helpsteer_sign_picks_the_chosen_response_and_its_size_is_the_margin(files):
    ds, _ = pairs(files["helpsteer2"])
    # strengths -2, 3, (0 dropped), 1: negative prefers response_1 (the sample's chosen text)
    assert [ds[i]["chosen"] for i in range(3)] == [T[0][1], T[1][2], T[3][2]]
    assert [ds[i]["rejected"] for i in range(3)] == [T[0][2], T[1][1], T[3][1]]
    assert ds[0]["prompt"] == [{"role": "user", "content": T[0][0]}] and list(ds["row_id"]) == [0, 1, 3]
    three, _ = pairs(files["helpsteer3"])
    assert three[0]["chosen"] == T[0][1] and three[1]["chosen"] == T[2][2]  # -3: response1; 2: response2
    assert len(three[2]["prompt"]) == 3 and three[2]["prompt"][-1] == {"role": "user", "content": T[3][0]}


def test_shp_label_picks_the_comment_and_the_ratio_or_its_log_is_the_margin(files, tmp_path, capsys):
    ds, _ = pairs(files["shp"])
    assert (ds[0]["chosen"], ds[1]["chosen"]) == (T[0][1], T[1][2])  # labels 1 -> A, 0 -> B
    np.testing.assert_allclose(compute_margins(ds, "data:log_score_ratio"), [math.log(5.0), math.log(2.0)])
    report, printed = analyze(files, "shp", tmp_path, capsys, "--tau", "2")
    assert report["split"]["n_hard"] == 0 and "--tau 2" in printed  # ratio >= 2 is SHP's own keep rule
    report, _ = analyze(files, "shp", tmp_path, capsys, "--tau", "2.5")
    assert report["split"]["n_hard"] == 1


def test_a_schema_without_ratings_is_still_read_counted_and_reported(files, tmp_path, capsys):
    report, printed = analyze(files, "pku_saferlhf", tmp_path, capsys)
    assert (report["rows_read"], report["rows_kept"]) == (3, 2) and report["margins"] is None
    assert report["dropped"] == {"better_response_id is not 0 or 1": 1}
    assert "likelihood_gap" in report["margin_sources"] and "reward_model" in printed
    lines = printed.splitlines()
    assert lines[0].startswith("read as PKU-SafeRLHF") and any(line.startswith("no margins: ") for line in lines)
    better, _ = pairs(files["pku_saferlhf"])
    assert (better[0]["chosen"], better[1]["chosen"]) == (T[0][2], T[1][1])  # ids 1, 0
    safer, _ = pairs(files["pku_saferlhf"], preference_label="safer")
    assert len(safer) == 3 and [r["chosen"] for r in safer] == [T[0][1], T[1][1], T[2][2]]  # ids 0, 0, 1


def test_nectar_pairs_by_rank_under_each_rule(files, tmp_path, capsys):
    worst, report = pairs(files["nectar"], pairing="best_vs_worst")
    # row 0 ranks 3,1,4,2: best = answer 1, worst = answer 2; row 4 ranks 2,1,3: best answer 1, worst answer 2
    assert report.dropped == {"fewer than two usable answers": 1, "tied or missing ranks": 2}
    np.testing.assert_allclose(compute_margins(worst, "data"), [3.0, 2.0])
    assert worst[0]["chosen"] == T[5][1] and worst[0]["rejected"] == T[6][1]
    assert worst[0]["prompt"] == f"\n\nHuman: {T[0][0]}\n\nAssistant:"
    every, _ = pairs(files["nectar"], pairing="all_pairs")
    assert sorted(compute_margins(every, "data")) == [1, 1, 1, 1, 1, 2, 2, 2, 3]  # 6 pairs of 4 ranks, 3 of 3
    random_a, _ = pairs(files["nectar"], pairing="best_vs_random")
    random_b, _ = pairs(files["nectar"], pairing="best_vs_random")
    assert list(random_a["rejected"]) == list(random_b["rejected"])  # seeded
    assert [r["chosen"] for r in random_a] == [T[5][1], T[21][1]]  # always the rank-1 answer
    report, printed = analyze(files, "nectar", tmp_path, capsys)
    assert [c["pairing"] for c in report["pairing_choices"]] == list(PAIRINGS)
    assert [c["pairs"] for c in report["pairing_choices"]] == [2, 2, 9]
    assert "pairing all_pairs: 9 pairs from 2 prompts" in printed


def test_raw_ultrafeedback_rating_and_pairing_are_choices_with_their_own_margins(files, tmp_path, capsys):
    # row 0: overall 8, 6.5, 9, 6.5 / aspect means 4.5, 3.25, 4, 2 (a different best answer);
    # row 1: overall 7, 7 / aspect means 4 (one aspect N/A), 3; row 2: one completion;
    # row 3: overall 8 and a missing one / aspect means 4, 2
    overall, report = pairs(files["ultrafeedback"], pairing="best_vs_worst")
    np.testing.assert_allclose(compute_margins(overall, "data"), [2.5, 0.0])
    assert overall[0]["chosen"] == T[14][1] and overall[0]["rejected"] == T[15][1]
    assert report.dropped == {"fewer than two usable answers": 1, "a completion's overall_score missing or not a number": 1}
    fine, report = pairs(files["ultrafeedback"], pairing="best_vs_worst", rating="fine_grained")
    np.testing.assert_allclose(compute_margins(fine, "data"), [2.5, 1.0, 2.0])
    assert fine[0]["chosen"] == T[12][1] and report.dropped == {"fewer than two usable answers": 1}
    every, report = pairs(files["ultrafeedback"], pairing="all_pairs")
    assert len(every) == 5 and report.dropped["all answers tied: no pair under all_pairs"] == 1  # 6.5 = 6.5 no pair
    assert overall[0]["prompt"] == [{"role": "user", "content": T[0][0]}] and overall[0]["score_chosen"] == 9.0
    report, printed = analyze(files, "ultrafeedback", tmp_path, capsys, "--rating", "fine_grained",
                              "--pairing", "best_vs_worst")
    choices = {(c["pairing"], c["rating"]): c for c in report["pairing_choices"]}
    assert len(choices) == 6 and choices["best_vs_worst", "fine_grained"]["this_run"]
    assert choices["best_vs_worst", "overall_score"]["hard"] == 1  # the 7 vs 7 tie
    assert choices["best_vs_worst", "fine_grained"]["hard"] == 0
    assert "pairing best_vs_worst, rating fine_grained (this run's): 3 pairs from 3 prompts" in printed
    assert "rating fine_grained" in report["margin_origin"]


def test_a_column_map_reads_any_schema_and_names_a_missing_column(tmp_path, capsys):
    rows = [{"question": T[0][0], "good": T[0][1], "bad": T[0][2], "g": 4.0, "b": 1.0},
            {"question": T[1][0], "good": T[1][1], "bad": T[1][2], "g": 3.0, "b": 3.0}]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["--data", str(path), "--data.columns", "prompt=question,chosen=good,rejected=bad,score_chosen=g,"
             "score_rejected=b", "--out", str(tmp_path / "a")]
    assert main(["analyze", *flags]) == 0
    report = json.loads((tmp_path / "a" / "data_report.json").read_text())
    assert report["format"] == "columns" and report["split"]["n_hard"] == 1 and report["margins"]["max"] == 3.0
    ab = tmp_path / "ab.jsonl"
    ab.write_text("".join(json.dumps({"q": t[0], "x": t[1], "y": t[2], "pick": p}) + "\n"
                          for t, p in zip(T, ["b", "a", "1", "5"])))
    ds, report = pairs(ab, columns={"prompt": "q", "response_a": "x", "response_b": "y", "label": "pick"})
    assert [r["chosen"] for r in ds] == [T[0][2], T[1][1], T[2][2]] and report.dropped == {"column 'pick' is not 0 or 1": 1}
    assert main(["analyze", "--data", str(path), "--data.columns", "prompt=question,chosen=great,rejected=bad",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs column(s) ['great']" in err


FILES_BY_HUB = {"argilla_dpo_mix": ("argilla/dpo-mix-7k", {}),
                "argilla_ultrafeedback": ("argilla/ultrafeedback-binarized-preferences-cleaned", {}),
                "helpsteer2": ("nvidia/HelpSteer2", {"data_dir": "preference"}),
                "helpsteer3": ("nvidia/HelpSteer3", {"subset": "preference"}),
                "shp": ("stanfordnlp/SHP", {}), "pku_saferlhf": ("PKU-Alignment/PKU-SafeRLHF", {}),
                "nectar": ("berkeley-nest/Nectar", {}), "ultrafeedback": ("openbmb/UltraFeedback", {})}


@pytest.mark.parametrize("name", sorted(FILES_BY_HUB))
def test_each_schema_is_read_by_its_hub_name_through_the_same_code(name, files, monkeypatch):
    hub_name, where = FILES_BY_HUB[name]
    local = datasets.load_dataset("json", data_files=str(files[name]), split="train")
    calls = []

    def hub(path, split=None, **kwargs):
        calls.append((path, split, kwargs))
        return local
    monkeypatch.setattr(datasets, "load_dataset", hub)
    ds, report = load_configured(DataConfig(source=hub_name, split="train", **where))
    assert calls == [(hub_name, "train", {"name" if k == "subset" else k: v for k, v in where.items()})]
    assert report.format == name
    monkeypatch.undo()
    same, _ = pairs(files[name])
    assert ds.to_list() == same.to_list()


def test_a_rating_written_as_text_is_a_counted_drop_or_one_line_naming_the_file_and_row(tmp_path, capsys):
    path = tmp_path / "dpo_mix.jsonl"
    rows = [{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"a{i}"}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"b{i}"}],
             "chosen_rating": rating, "rejected_rating": 1.0} for i, rating in enumerate([5.0, 4.0, "n/a"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # datasets 5 keeps a column of mixed JSON types (the text is then a counted drop), datasets 3 refuses it:
    # where the reader refuses the file, the kit names the row instead of Arrow's message.
    rc = main(["analyze", "--data", str(path), "--out", str(tmp_path / "o")])
    if rc == 0:
        assert json.loads((tmp_path / "o" / "data_report.json").read_text())["dropped"] == \
            {"chosen_rating missing or not a number": 1}
    else:
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and f"{path}: row 3: chosen_rating is text" in err
    with pytest.raises(DataError, match=r"x.jsonl: row 2: completions\[\].overall_score is text \(\"high\"\) where row 1 has"
                                        r" number"):
        mixed_type_check(Path("x.jsonl"), [{"completions": [{"overall_score": 8.0}]},
                                           {"completions": [{"overall_score": "high"}]}])


def test_a_format_can_be_named_and_says_what_it_misses(files):
    ds, report = pairs(files["helpsteer2"], format="helpsteer2")
    assert report.format == "helpsteer2" and len(ds) == 3
    with pytest.raises(DataError, match=r"format 'shp' needs column\(s\) \['history'"):
        pairs(files["helpsteer2"], format="shp")
    with pytest.raises(DataError, match="unknown data format 'helpsteer'"):
        pairs(files["helpsteer2"], format="helpsteer")


def test_every_format_is_recognised_by_its_own_columns_and_its_signals_are_known():
    for fmt in FORMATS.values():
        assert all(s in SIGNALS for s in fmt.signals), fmt.name
        if fmt.columns:
            assert detect_format(fmt.columns).name == fmt.name  # no earlier format takes its columns
    assert detect_format(["prompt", "chosen", "rejected", "score_chosen"]).name == "preference"
