"""A study's one-page report: tumour volumes, the sequences used and missing, QC images and acquisition advice.

The advice reads the model's held-out table of Dice per modality combination (mean and spread over cases), which the
evaluation writes into metadata.json beside the model (:data:`bundle.metadata.EXPECTED_DICE_KEY`), so a received bundle advises
without its training data: for each region, the Dice expected with the sequences this study has, and what each
missing sequence added to them gives on the same held-out cases.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bundle.conventions import NETWORK_REGIONS, REPORT_REGIONS, combination_name, label_regions

__all__ = ["region_volumes_ml", "acquisition_advice", "format_advice", "report_markdown", "markdown_to_html", "qc_png"]


def region_volumes_ml(label, convention: str = "brats2021") -> dict[str, float]:
    """Volume of each BraTS region of a SimpleITK label map, in mL (voxel count times voxel volume).

    Example:
        >>> # a label map of 1000 ET voxels of 1 mm^3: {"ET": 1.0, "TC": 1.0, "WT": 1.0}
    """
    import SimpleITK as sitk

    regions = label_regions(sitk.GetArrayViewFromImage(label), convention)
    voxel_ml = float(np.prod(label.GetSpacing())) / 1000.0
    return {region: float(regions[NETWORK_REGIONS.index(region)].sum()) * voxel_ml for region in REPORT_REGIONS}


def acquisition_advice(
    table: Mapping[str, Any] | None, present: Sequence[str], modalities: Sequence[str]
) -> list[dict[str, Any]]:
    """Per region: the expected Dice with ``present`` and with each missing sequence added, from ``table``.

    Args:
        table: the metadata block (:data:`bundle.metadata.EXPECTED_DICE_KEY`): ``{"dice": {combination: {region: [mean, std]}}, ...}``.
        present: the sequences the study has.
        modalities: the model's sequences, in order (combination names follow it).

    Returns:
        ``[{"region", "with": [mean, std], "adding": {sequence: [mean, std]}}]``; empty without a table or without
        the combination present in it; a combination the table lacks, or a region it has no score for (``null``),
        is left out. A std is ``null`` when one case was scored.
    """
    if not table:
        return []
    dice = table["dice"]

    def key(sequences):
        return combination_name([m for m in modalities if m in set(sequences)])

    if key(present) not in dice:
        return []
    missing = [m for m in modalities if m not in present and key([*present, m]) in dice]
    return [
        {
            "region": region,
            "with": dice[key(present)][region],
            "adding": {
                m: dice[key([*present, m])][region] for m in missing if dice[key([*present, m])][region][0] is not None
            },
        }
        for region in REPORT_REGIONS
        if dice[key(present)][region][0] is not None
    ]


def _names(sequences: Sequence[str]) -> str:
    names = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
    return "+".join(names.get(s, s) for s in sequences)


def _spread(value: Sequence[float | None]) -> str:
    mean, std = value
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "")


def format_advice(advice: Sequence[Mapping[str, Any]], present: Sequence[str], table: Mapping[str, Any]) -> list[str]:
    """One sentence per region, e.g. ``"ET: with FLAIR+T2 the model's ET Dice on 12 held-out cases is 0.19 ± 0.17;
    with T1ce added 0.82 ± 0.05 (+0.63)"``."""
    cases = f"{table['cases']} {'held-out' if not table.get('optimistic') else 'optimistic (not held-out)'} cases"
    lines = []
    for row in advice:
        mean = row["with"][0]
        sentence = f"{row['region']}: with {_names(present)} the model's {row['region']} Dice on {cases} is {_spread(row['with'])}"
        additions = [
            f"with {_names([m])} added {_spread(value)} ({value[0] - mean:+.2f})"
            for m, value in sorted(row["adding"].items(), key=lambda item: -item[1][0])
        ]
        lines.append(sentence + ("; " + "; ".join(additions) if additions else ""))
    return lines


def report_markdown(summary: Mapping[str, Any]) -> str:
    """The report's Markdown from the pipeline's summary (:func:`bundle.clinical.pipeline.segment_study`)."""
    present, missing = summary["sequences"], summary["missing"]
    lines = [
        f"# Brain tumour segmentation: {summary['study']}",
        "",
        f"Model: {summary['model']} (LCKD, {summary['model_sha256'][:12]}). Research use only, not a diagnosis.",
        "",
        "## Sequences",
        "",
        "| sequence | series used | mutual information with the reference |",
        "|---|---|---|",
    ]
    for sequence in present:
        info = summary["series"][sequence]
        mi = info["mutual_information"]
        lines.append(f"| {_names([sequence])} | {info['name']} | {'reference' if mi is None else f'{mi:.2f}'} |")
    lines += ["", f"Missing: {_names(missing) if missing else 'none'}."]
    if summary["skipped"]:
        lines += ["", "Series not used:", ""] + [f"- {item}" for item in summary["skipped"]]
    if summary["notes"]:
        lines += [""] + [f"- {note}" for note in summary["notes"]]
    lines += [
        "",
        "## Tumour volumes",
        "",
        f"In the {_names([summary['reference']])} series' grid.",
        "",
        "| region | volume (mL) |",
        "|---|---|",
    ]
    lines += [f"| {region} | {summary['volumes_ml'][region]:.1f} |" for region in REPORT_REGIONS]
    lines += ["", "## Acquisition advice", ""]
    if summary["advice"]:
        lines += [f"- {line}" for line in summary["advice"]]
        lines += ["", summary["advice_source"]]
    else:
        lines.append(summary["advice_source"])
    lines += [
        "",
        "## Quality control",
        "",
        "![registration](qc_registration.png)",
        "",
        "![segmentation](qc_segmentation.png)",
        "",
        "## Time per stage",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in summary["seconds"].items()]
    return "\n".join(lines) + "\n"


def markdown_to_html(markdown: str, title: str) -> str:
    """The report's Markdown as a self-contained HTML page (headings, lists, tables, images; nothing else is used).

    Every text is escaped: series descriptions come from the study's files, and the ``markdown`` package would pass
    any HTML in them through into the page.
    """
    body, table = [], []

    def flush_table():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{c}</th>" for c in cells[0])
            rest = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in cells[1:])
            body.append(f"<table><tr>{head}</tr>{rest}</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](")
            body.append(f'<p><img src="{html.escape(src.rstrip(")"))}" alt="{html.escape(alt)}" width="800"></p>')
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = "body{font-family:sans-serif;max-width:900px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 8px}"
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def qc_png(volumes: Mapping[str, Any], overlay, title: str, contour_of=None) -> bytes:
    """Three orthogonal slices (axial, coronal, sagittal) of each volume through the overlay's centre, as PNG bytes.

    Args:
        volumes: ``{row name: SimpleITK image}`` on one grid.
        overlay: a label map on that grid (filled in colour), or ``None``.
        title: the figure's title.
        contour_of: an image on that grid whose brain outline and edges are drawn on every panel (registration QC).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    arrays = {name: sitk.GetArrayFromImage(image) for name, image in volumes.items()}  # z, y, x
    first = next(iter(arrays.values()))
    labels = sitk.GetArrayFromImage(overlay) if overlay is not None else np.zeros(first.shape, np.uint8)
    focus = labels > 0 if (labels > 0).any() else first > 0
    centre = [int(round(c)) for c in np.argwhere(focus).mean(0)] if focus.any() else [s // 2 for s in first.shape]
    edges = sitk.GetArrayFromImage(contour_of) if contour_of is not None else None

    def planes(array):
        return [array[centre[0]], array[:, centre[1]][::-1], array[:, :, centre[2]][::-1]]

    figure, axes = plt.subplots(len(arrays), 3, figsize=(9, 3 * len(arrays)), squeeze=False)
    for row, (name, array) in enumerate(arrays.items()):
        top = np.percentile(array[array > 0], 99) if (array > 0).any() else 1.0
        for column, (image, label, plane) in enumerate(
            zip(planes(array), planes(labels), ("axial", "coronal", "sagittal"))
        ):
            axis = axes[row][column]
            axis.imshow(image, cmap="gray", vmin=0, vmax=top)
            if overlay is not None:
                axis.imshow(np.ma.masked_equal(label, 0), cmap="autumn", alpha=0.45, interpolation="nearest")
            if edges is not None:
                reference = planes(edges)[column]
                level = np.percentile(reference[reference > 0], 50) if (reference > 0).any() else 0.5
                axis.contour(reference, levels=[level], colors="cyan", linewidths=0.5)
            axis.set_title(f"{name}, {plane}", fontsize=8)
            axis.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    plt.close(figure)
    return buffer.getvalue()
