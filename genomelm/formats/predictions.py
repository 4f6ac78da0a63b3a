"""Prediction tables (TSV): one cell cleaner for every writer, and the in-context predictions layout."""

from __future__ import annotations

import math


def write_icl_predictions(handle, rows: list[dict], classes: list[str], has_labels: bool) -> None:
    """TSV in input order: id, predicted (label-token argmax), predicted_token (whole-vocabulary argmax),
    prob_<class> (softmax over the label tokens), shots (per class), label (inputs with labels), flag ('.'
    or why the record got no prediction). Missing values are 'NA'."""
    columns = ["id", "predicted", "predicted_token"] + [f"prob_{tsv_cell(c)}" for c in classes] + ["shots"]
    columns += (["label"] if has_labels else []) + ["flag"]
    handle.write("\t".join(columns) + "\n")
    for row in rows:
        fields = [tsv_cell(row["id"]), row["predicted"], row["predicted_token"]]
        fields += [f"{p:.6g}" if not math.isnan(p) else "NA" for p in row["probs"]] + [row["shots"]]
        fields += ([tsv_cell(row["label"] or "NA")] if has_labels else []) + [tsv_cell(row["flag"])]
        handle.write("\t".join(fields) + "\n")


def tsv_cell(text: str) -> str:
    """One TSV cell: tabs and newlines would break the table."""
    return str(text).replace("\t", " ").replace("\n", " ").replace("\r", " ")
