"""Small files in the exact published schemas of eight preference datasets, built for the tests and
for docs/data_formats.md: column names and types as the datasets publish them, real text from the
shipped UltraFeedback sample, and numbers (ratings, strengths, ranks, labels) chosen so that every
pair, margin and drop can be checked by hand. They are built, not samples of those datasets.

    python tests/data/schema_files.py DIR     # writes DIR/<format>.jsonl for each schema
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "ultrafeedback-sample" / "ultrafeedback-binarized-sample.jsonl.gz"


def texts(n: int = 24) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) of the sample's first ``n`` usable rows: real UltraFeedback text."""
    out = []
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["chosen"].strip() and row["rejected"].strip() and row["chosen"] != row["rejected"]:
                out.append((row["prompt"], row["chosen"], row["rejected"]))
            if len(out) == n:
                return out
    return out


def chat(prompt: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def argilla_dpo_mix(t) -> list[dict]:
    """argilla/dpo-mix-7k: chosen/rejected conversations, chosen_rating / rejected_rating."""
    ratings = [(5.0, 2.0), (4.5, 4.5), (None, 1.0), (3.0, 1.0)]
    return [{"dataset": "argilla/ultrafeedback-binarized-preferences", "chosen": chat(p, c), "rejected": chat(p, r),
             "chosen_rating": a, "rejected_rating": b, "chosen_model": "gpt-4", "rejected_model": "llama-2-13b-chat"}
            for (p, c, r), (a, b) in zip(t, ratings)]


def argilla_ultrafeedback(t) -> list[dict]:
    """argilla/ultrafeedback-binarized-preferences-cleaned: prompt, conversations, hyphenated ratings."""
    ratings = [(5.0, 3.0), (4.75, 4.5), (4.0, None)]
    return [{"source": "evol_instruct", "prompt": p, "chosen": chat(p, c), "chosen-rating": a, "chosen-model": "gpt-4",
             "rejected": chat(p, r), "rejected-rating": b, "rejected-model": "alpaca-7b"}
            for (p, c, r), (a, b) in zip(t, ratings)]


def helpsteer2(t) -> list[dict]:
    """nvidia/HelpSteer2 (preference): strength -3..3, negative = response_1 better."""
    strengths = [-2, 3, 0, 1]
    return [{"split": "train", "prompt": p, "response_1": c, "response_2": r, "preference_strength": s,
             "preference_statement": "@Response 1 is better than @Response 2." if s < 0 else "",
             "preference_elaboration": "", "three_most_similar_preferences": [], "all_preferences_unprocessed": []}
            for (p, c, r), s in zip(t, strengths)]


def helpsteer3(t) -> list[dict]:
    """nvidia/HelpSteer3 (preference): a conversation, response1/response2, overall_preference."""
    rows = []
    for i, ((p, c, r), pref) in enumerate(zip(t, [-3, 0, 2, -1])):
        context = [{"role": "user", "content": p}]
        if i == 3:  # a multi-turn conversation
            context = [{"role": "user", "content": t[5][0]}, {"role": "assistant", "content": t[5][1]}, *context]
        rows.append({"domain": "general", "language": "english", "context": context, "response1": c, "response2": r,
                     "overall_preference": pref,
                     "individual_preference": [{"score": pref, "reasoning": "", "feedback1": "", "feedback2": ""}]})
    return rows


def shp(t) -> list[dict]:
    """stanfordnlp/SHP: labels 1 = comment A preferred; score_ratio = preferred score / other."""
    cases = [(1, 10, 2, 5.0), (0, 3, 6, 2.0), (2, 5, 1, 5.0), (1, 8, 0, None)]
    return [{"post_id": f"p{i}", "domain": "askscience_train", "upvote_ratio": 0.9, "history": p,
             "c_root_id_A": f"a{i}", "c_root_id_B": f"b{i}", "created_at_utc_A": 1600000000, "created_at_utc_B": 1600000100,
             "score_A": a, "score_B": b, "human_ref_A": c, "human_ref_B": r, "labels": label, "seconds_difference": 100.0,
             "score_ratio": ratio} for i, ((p, c, r), (label, a, b, ratio)) in enumerate(zip(t, cases))]


def pku_saferlhf(t) -> list[dict]:
    """PKU-Alignment/PKU-SafeRLHF: better_response_id and safer_response_id (0 or 1)."""
    ids = [(1, 0), (0, 0), (2, 1)]
    return [{"prompt": p, "response_0": c, "response_1": r, "prompt_source": "Alpaca3-70B",
             "response_0_source": "Alpaca-7B", "response_1_source": "Alpaca-7B", "is_response_0_safe": True,
             "is_response_1_safe": False, "response_0_harm_category": {}, "response_1_harm_category": {},
             "response_0_severity_level": 0, "response_1_severity_level": 1, "better_response_id": b,
             "safer_response_id": s, "response_0_sha256": "", "response_1_sha256": ""}
            for (p, c, r), (b, s) in zip(t, ids)]


def nectar(t) -> list[dict]:
    """berkeley-nest/Nectar: an HH-style prompt and answers ranked 1 (best) to K."""
    def answers(ranks, start):
        return [{"answer": t[start + k][1], "model": f"model-{k}", "rank": rank} for k, rank in enumerate(ranks)]
    cases = [[3.0, 1.0, 4.0, 2.0], [1.0], [1.0, 1.0, 2.0], [1.0, None], [2.0, 1.0, 3.0]]
    return [{"prompt": f"\n\nHuman: {t[i][0]}\n\nAssistant:", "answers": answers(ranks, 4 + 4 * i), "turns": 1,
             "num_responses": len(ranks), "source": ["sharegpt"], "good_natured": True}
            for i, ranks in enumerate(cases)]


def aspects(h, o, i, tr) -> dict:
    return {name: {"Rating": str(v), "Rationale": "", **({"Type": ["1"]} if name in ("helpfulness", "truthfulness") else {})}
            for name, v in (("helpfulness", h), ("honesty", o), ("instruction_following", i), ("truthfulness", tr))}


def ultrafeedback(t) -> list[dict]:
    """openbmb/UltraFeedback: an instruction and rated completions (overall_score, and four aspect
    ratings whose mean is fine-grained_score; "N/A" where an aspect does not apply)."""
    def completion(text, overall, ratings):
        known = [float(x) for x in ratings if x != "N/A"]
        return {"model": "gpt-4", "principle": "helpfulness", "custom_system_prompt": "", "response": text,
                "annotations": aspects(*ratings), "critique": "", "overall_score": overall,
                "fine-grained_score": sum(known) / len(known)}
    cases = [
        [(8.0, (5, 5, 4, 4)), (6.5, (3, 4, 3, 3)), (9.0, (4, 4, 4, 4)), (6.5, (2, 2, 2, 2))],
        [(7.0, (4, "N/A", 5, 3)), (7.0, (3, 3, 3, 3))],
        [(8.0, (5, 5, 5, 5))],
        [(8.0, (4, 4, 4, 4)), (None, (2, 2, 2, 2))],
    ]
    return [{"source": "evol_instruct", "instruction": t[i][0], "models": ["gpt-4"] * len(c),
             "completions": [completion(t[12 + k][1], overall, ratings) for k, (overall, ratings) in enumerate(c)],
             "correct_answers": ["None"], "incorrect_answers": ["None"]} for i, c in enumerate(cases)]


SCHEMAS = {"argilla_dpo_mix": argilla_dpo_mix, "argilla_ultrafeedback": argilla_ultrafeedback, "helpsteer2": helpsteer2,
           "helpsteer3": helpsteer3, "shp": shp, "pku_saferlhf": pku_saferlhf, "nectar": nectar,
           "ultrafeedback": ultrafeedback}


def write_schema_files(directory: Path) -> dict[str, Path]:
    """``directory/<format>.jsonl`` for each schema; returns the paths by format name."""
    directory.mkdir(parents=True, exist_ok=True)
    t = texts()
    paths = {}
    for name, build in SCHEMAS.items():
        paths[name] = directory / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(row) + "\n" for row in build(t)))
    return paths


if __name__ == "__main__":
    for name, path in write_schema_files(Path(sys.argv[1])).items():
        print(f"{name}: {path}")
