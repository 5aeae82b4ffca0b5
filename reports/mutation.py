"""Mutation testing (``make mutate``): mutmut over the logic the tests must hold, report under
reports/mutation/.

Each *group* mutates some modules and runs only the fast test files that exercise them (mutmut then
runs, per mutant, only the tests that cover the mutated function). A group runs in its own copy of
the repository (``build/mutation/<group>``: the tracked files plus the compiled extension), so the
working tree is never touched and groups do not share mutmut's cache.

Outputs, per group: ``reports/mutation/<group>.md`` (score, the command, every surviving mutant with
its diff) and ``reports/mutation/<group>.json`` (counts and the status of every mutant); and
``reports/mutation/README.md``, the table of all groups run so far (groups not run this time keep
their last figures, with their date).

Usage::

    python -m reports.mutation                       # every group
    python -m reports.mutation inference evaluation  # some groups
    python -m reports.mutation --list                # the groups, their modules and tests
    python -m reports.mutation GROUP --rerun-survivors  # after adding tests: re-test the survivors only

Hypothesis runs its "mutation" profile (tests/conftest.py: few, derandomised examples), so each
mutant sees the same examples and a run stays tractable on a small machine.

Score = killed / (mutants - skipped), where "killed" counts mutants failing a test or timing out
(mutmut's own definition); "no tests" mutants (code no selected test runs) count as survivors.
Survivors judged by hand fall in two lists below, each a rule per shape of mutant with its reason:
EQUIVALENT (no test can tell them from the code) and COSMETIC (they change only the look of a figure;
a test could only restate the constant). Both stay in the raw score; the pages and the summary also
give the score without them, and ``--rerun-survivors`` does not re-test them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "mutation"
WORK = ROOT / "build" / "mutation"

# group -> (modules to mutate (globs), the fast test files that cover them)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "inference": (["retina_unet/inference/*"], ["tests/test_inference.py"]),
    "evaluation": (
        [f"retina_unet/evaluation/{m}.py" for m in ("ap", "matching", "froc", "metrics", "per_case")],
        ["tests/test_metrics.py", "tests/test_evaluation.py"],
    ),
    # file writing and figures: slower to test, so a group of their own
    "evaluation_io": (
        ["retina_unet/evaluation/export.py", "retina_unet/evaluation/plots.py"],
        ["tests/test_metrics.py", "tests/test_evaluation.py"],
    ),
    # the statistics and the claims' verdicts, with their fast unit tests (tests/test_report.py's
    # other tests run whole fake studies and draw figures, seconds each: see study_report_render)
    "study_report": (
        ["retina_unet/study/report/tables.py", "retina_unet/study/report/findings.py"],
        ["tests/test_study_findings.py", "tests/test_report_tables.py",
         "tests/test_report.py::test_t_interval_on_a_hand_case",
         "tests/test_report.py::test_paired_difference_pairs_by_seed_only"],
    ),
    # writing the report and its figures: 1975 mutants, each rerunning up to ~10 s of tests (the end-to-end
    # ones and the slow real-run one); on the shared 2-core machine a run covers ~600 mutants in half an hour,
    # so it was finished in pieces (--rerun-survivors goes on with an interrupted run); better on a bigger one
    "study_report_render": (
        ["retina_unet/study/report/__init__.py", "retina_unet/study/report/figures.py"],
        ["tests/test_report.py"],
    ),
    "training_resume": (
        ["retina_unet/training/checkpoint.py", "retina_unet/training/engine.py"],
        ["tests/test_training.py"],
    ),
    # generation (the pixel maths) and its spec; the file format, CLI and previews separately
    "toy_data": (
        [f"toy_data/{m}.py" for m in ("generate", "spec", "palette", "reference")],
        ["tests/test_toy_data.py"],
    ),
    "toy_data_io": (
        [f"toy_data/{m}.py" for m in ("storage", "cli", "preview")],
        ["tests/test_toy_data_storage.py"],
    ),
}

# Survivors judged equivalent (no test can tell them apart from the original), as (mutant-name
# regex, regex on the diff's added line, why). Reviewed by hand; matched again on every run, so a
# new survivor is never hidden by an old judgement unless it has the same shape.
EQUIVALENT: list[tuple[str, str, str]] = [
    (r"predictor\.x__nms__", r".", "unreachable: the pure-PyTorch NMS fallback runs only when "
     "retina_unet.ops has no `nms`, and it always has (dead code)"),
    (r"^retina_unet\.inference\.", r"device=None|\.to\(None\)\)$|, \)\)$|, \) for m, p in members", "on the CPU-only test machine, the device argument "
     "changes nothing (it matters only for CUDA tensors)"),
    (r"_merge__", r"torch\.full\(.*(dtype=None|\), m, device|\), cls, device)", "torch.full with an int fill "
     "value already makes int64"),
    (r"_merge__", r"new_zeros\(\(1,", "the empty fallback is indexed by the (empty) score order"),
    (r"tta\.x_flip_(images|seg)__", r"or True", "flipping no axes is the identity"),
    (r"tta\.x_flip_boxes__", r"if not view and boxes|numel\(\) == 1", "the loop over no axes / no boxes "
     "returns an equal copy"),
    (r"tta\.x_mirror_views__", r"len\(axes\) \+ 2", "combinations longer than the axes are empty"),
    (r"wbc\.x_weighted_box_clustering__", r"\.to\(None\)$", "dtype only: float64 inputs stay float64; "
     "float32 inputs differ below float32 output precision; int member ids stay integers"),
    (r"^retina_unet\.inference\.wbc\.", r"^\s*dev = None$|dtype=torch\.\w+, \),?$|\.to\(dtype=torch\.int64\)$|"
     r"torch\.arange\(h, \)", "on the CPU-only test machine every tensor is on the CPU: dropping the device "
     "argument changes nothing (it matters only with CUDA)"),
    (r"wbc\.x_weighted_box_clustering__", r"groups = torch\.zeros\(.*(dtype=None, device|else 0, device=)",
     "weighted_box_clustering_batched converts the groups to int64 (all zeros either way)"),
    (r"wbc\.x_weighted_box_clustering(_batched)?__", r"\(boxes\.dim\(\) == 2\) or True else 0|else 1, dtype=torch\.int64",
     "boxes that are not (N, 2*D) can only be the empty input (torch.zeros(0)), whose shape[0] is 0 as well; "
     "with no boxes the batched function returns before reading the groups"),
    (r"wbc\.x_weighted_box_clustering_batched__", r"mem = member_ids\.detach\(\)\.to\(device=dev, (dtype=None)?\)$",
     "member ids are only compared with each other: any integer (or float) dtype gives the same counts"),
    (r"wbc\.x_weighted_box_clustering_batched__", r"o = torch\.argsort\(mem, (stable=False)?\)$", "the ties of "
     "this sort are equal member ids, and the stable sort by cluster that follows keeps each cluster in member "
     "order either way"),
    # study_report (tables.py, findings.py)
    (r"findings\.x_(directional|bounded)_verdict__", r"if (sign|side) >= 0 else", "sign / side is always +1 or "
     "-1 (every caller, and the docstring): `>= 0` and `> 0` agree"),
    (r"findings\.x__(collapse|group_best|lead_grows|mask_loss|no_gain_scale|unet_two_stage_level)__",
     r"_verdict\(est, [+-]2\)", "the verdicts only compare sign / side with 0: +-2 acts as +-1"),
    (r"findings\.x_min_detectable__", r"if k < 2 and math\.isnan\(sd\)", "for k < 2, t.ppf with k - 1 <= 0 "
     "degrees of freedom is NaN, so the formula returns NaN as the guard does"),
    (r"findings\.x_seeds_needed__", r"isnan\(sd\) and math\.isnan\(gap\)|range\(MAX_SEEDS_PLANNED \+ 1\)",
     "a NaN sd or gap, or k < 2, makes every `min_detectable(sd, k) <= abs(gap)` false: the loop returns None anyway"),
    (r"findings\.x__group_lead__", r"if a is None and b is None", "with only one group at a size, the per-seed "
     "difference against the missing model is empty and `if len(d)` skips the size"),
    (r"findings\.x__cells__", r"itertuples\(index=None\)", "index=None is falsy, like index=False"),
    (r"findings\.x.Estimate.of__", r"if \(n >= 2\) or True", "pandas' sample std of fewer than 2 values is "
     "NaN already"),
    (r"tables\.x_(summarise|paired_differences)__", r"\.groupby\(\[.*\], \):", "groupby sorts by default: "
     "dropping sort=True changes nothing"),
    (r"tables\.x_result_rows__", r'res\.get\("resumed", (None)?\)\)', "bool(None) is False, like the default"),
    # training_resume (checkpoint.py, engine.py)
    (r"training\.checkpoint\.x_load_checkpoint__", r"weights_only=None|map_location=map_location, \)",
     "torch >= 2.6 (here 2.14) loads with weights_only=True by default, and None means the default"),
    (r"training\.engine\.", r"resolve_device\(None\)|\.to\(None|images\.to\(device, \)|non_blocking=False|"
     r"images\.to\(non_blocking|next_batch\(\), None\)|map_location=None|load_checkpoint\(path, \)",
     "on the CPU-only test machine every tensor is on the CPU already: the device / non_blocking / "
     "map_location argument changes nothing (it matters only with CUDA)"),
    (r"training\.engine\.x.Trainer.try_resume__", r"cuda", "restores the CUDA RNG state: no CUDA on the test "
     "machine (the saved cuda_rng is None and torch.cuda.is_available() is False)"),
    (r"training\.engine\.x.Trainer.state__", r"is_available\(\)\) and False", "no CUDA on the test machine: "
     "cuda_rng is None either way"),
    (r"training\.engine\.x.Trainer.validate__", r"^\s*None,$", "the device predict_images moves the batch to: "
     "on the CPU-only test machine `.to(None)` and `.to(cpu)` are the same (it matters only with CUDA)"),
    # evaluation (ap.py, matching.py, froc.py, metrics.py, per_case.py)
    (r"^retina_unet\.evaluation\.", r"\.reshape\(-2\)", "numpy (2.4) reads any negative size as the one unknown "
     "dimension: reshape(-2) is reshape(-1)"),
    (r"^retina_unet\.evaluation\.", r'kind="(MERGESORT|STABLE)"', "numpy reads the sort kind case-insensitively "
     "(from its first letter): the same sort"),
    (r"^retina_unet\.evaluation\.", r"\.astype\(None\)$|^\s*raw = raw\.astype\(None\)$", "astype(None) is "
     "astype(float64) in numpy"),
    (r"ap\.x__nanmean__", r"not np\.isnan\(x\)\], (dtype=None)?\)$", "the values are Python floats (the APs, or "
     "None, which is filtered out): numpy makes float64 either way"),
    (r"ap\.x_average_precision__", r"if n_gt < 0:|float\(\"NAN\"\)", "with n_gt 0, interpolated_precision returns "
     "NaN everywhere itself, so the mean is NaN either way; float() parses 'NAN' as 'nan'"),
    (r"ap\.x_interpolated_precision__", r"np\.finfo\(None\)\.tiny", "np.finfo(None) is float64's (deprecated, "
     "same value)"),
    (r"ap\.x_interpolated_precision__", r"searchsorted\(recall, RECALL_POINTS, \)$", "side='left' is "
     "searchsorted's default"),
    (r"ap\.x_interpolated_precision__", r"precision\[np\.minimum\(idx, recall\.size - 2\)\]", "only changes an "
     "index equal to size - 1 (larger ones are masked by the where): that is reached only when the last ranked "
     "prediction is the first to reach its recall, i.e. a TP, and a TP's precision is >= the one ranked before "
     "it, so the monotone precision at size - 2 equals that at size - 1 (a single prediction: index -1 is 0)"),
    (r"ap\.x_patient_level_ap__", r"image_scores = np\.asarray\(image_scores, (None)?\)$", "the scores are only "
     "compared with 0 (by value, in any dtype) and ranked by average_precision, which converts them to float64"),
    (r"ap\.x_evaluate_detections__", r"np\.array\(img_labels, (None)?\)\)$", "img_labels is a list of Python "
     "bools: numpy makes a bool array either way"),
    (r"ap\.x_evaluate_detections__", r"if matches else np\.zeros\(1\)$", "reached only with no images, where "
     "n_gt is 0 and the AP is NaN before the scores are read"),
    (r"froc\.x_froc_curve__", r"np\.argsort\(-scores, (kind=None)?\)$", "only the cumulative counts at the last "
     "prediction of each group of equal scores are kept, and they do not depend on the order within a group"),
    (r"froc\.x_sensitivity_at__", r"fpi = np\.asarray\(fp_per_image, (dtype=None)?\)$|"
     r"rates = np\.asarray\(rates, (dtype=None)?\)\.reshape\(-1\)$", "the rates and the curve's FPs per image are "
     "only compared (rates < 0, searchsorted), which numpy does by value across integer and float dtypes"),
    (r"matching\.x__as_boxes__", r"np\.asarray\(boxes, (dtype=None)?\) if not torch", "the next line converts to "
     "float64 anyway (.to('cpu', torch.float64)): a float64 list stays float64, float32 / integer arrays convert "
     "exactly either way"),
    (r"matching\.x__as_boxes__", r"t\.detach\(\)\.to\((None, )?torch\.float64\)$", "on the CPU-only test machine "
     "every tensor is on the CPU already: the device argument changes nothing (it matters only with CUDA)"),
    (r"matching\.x__as_boxes__", r"^\s*return t\.reshape\(0, (width or 5)?\)$", "the width of an empty box array "
     "is never read: with no predictions or no ground truth match_image_class returns before comparing widths or "
     "computing IoUs"),
    (r"matching\.x_match_image_class__", r"pb = _as_boxes\(pred_boxes, (None|gt\.shape\[1\] if \(gt\.numel\(\)\) "
     r"(and False|or True) else None)?\)$", "the width given for empty predictions is never read (match_image_class "
     "returns before comparing widths when there are no predictions or no ground truth)"),
    (r"matching\.x__class_gt__", r"^\s*return boxes\.reshape\(0, ", "the width of the empty ground truth is never "
     "read: _as_boxes makes any empty array (0, 4) and match_image_class returns before using it"),
    (r"matching\.x_match_image_class__", r"np\.full\(n_pred, -1, (dtype=None)?\)$", "np.full with an int fill "
     "value makes int64 already"),
    (r"matching\.x_match_image_class__", r"iou\[p\] >= iou_threshold\), iou\[p\], -1\.0\)", "an IoU exactly at "
     "the threshold never wins: the argmax takes a higher candidate if there is one, and `cand[g] > "
     "iou_threshold` rejects it otherwise"),
    (r"matching\.x_match_image_class__", r"iou\[p\] > iou_threshold\), iou\[p\], -2\.0\)|if cand\[g\] >= "
     r"iou_threshold:", "cand holds IoUs above the threshold, or a filler below every threshold in use (IoU "
     "thresholds are >= 0): -1 or -2 both lose the argmax and fail the test, and cand[g] never equals the threshold"),
    (r"matching\.x_match_dataset__", r"zip\(predictions, targets, (strict=(None|False))?\)", "the lengths are "
     "checked equal just above (ValueError), so strict changes nothing"),
    (r"metrics\.x__clean_list__", r"np\.asarray\(values, (dtype=None)?\)\]$", "every caller passes float arrays "
     "or lists of floats, and float() is applied to each value anyway"),
    (r"metrics\.x_detection_metrics__", r"RECALL_POINTS\.round\(3\)", "the 101 recall points i / 100 round to the "
     "same floats at 2 and 3 decimals"),
    (r"per_case\.x__labels__", r"reshape\(-1\)\.astype\(None\)$", "float labels instead of int64: they are only "
     "compared with class numbers and printed through int()"),
    (r"per_case\.x_per_case_rows__", r"np\.asarray\(boxes\[m\.index\[k\]\], (None)?\)\)", "the box is printed "
     "with :g (6 significant digits of the value as a Python float): float32 -> float64 is exact, and integers "
     "print the same"),
    # evaluation_io (export.py, plots.py)
    (r"^retina_unet\.evaluation\.(plots|export)\.", r"zip\((axes\[0\], (classes|panels)|f\[\"fp_rates\"\], "
     r"f\[\"sensitivity\"\]|sns\.color_palette\(\"tab10\"\), metrics\.items\(\)), (strict=(None|False))?\)",
     "the zipped sequences have the same length (one axis per panel, one sensitivity per rate), or strict was "
     "False already (the colours of the palette outnumber the runs): strict changes nothing"),
    (r"plots\.x_plot_(pr|froc)__", r"squeeze=None", "None is as false as False"),
    (r"export\.x_write_metrics__", r'write_csv_atomic\(out / "per_case\.csv", cases, (None)?\)$', "without "
     "columns the header comes from the first row's keys: there is always a row (detection_metrics, called just "
     "before, refuses zero images) and per_case_rows builds every row in the column order"),
    (r"plots\.x__save__", r"plt\.close\(None\)$", "closes the current figure, which is this figure (made by this "
     "call, nothing drawn since)"),
    (r"plots\.x__save__", r"save_figure_atomic\(fig, path, \)$", "save_figure_atomic's default dpi is 80, DPI "
     "itself"),
    # study_report_render (study/report/__init__.py, figures.py)
    (r"report\.x__paired_section__", r"pd\.concat\((per_seed|summaries), (ignore_index=(None|False))?\)$", "the "
     "concatenated frames keep their own row labels (duplicates): every later use is positional or aligned on the "
     "same frame (masks of its own columns, assign of a list, sort_values, iterrows, to_csv without the index)"),
    (r"report\.x__per_class_section__", r"if \(len\(scale\)\) or True else \[\]", "with no circles_scale rows, "
     "scale[c].notna().any() is False for every column: the list is empty either way"),
    (r"figures\.x_plot_\w+__", r"zip\((axes\[0\], panels|\*rows|\*ax\.get_legend_handles_labels\(\)|gts\[j\]\[\"boxes\"\], "
     r"gts\[j\]\[\"labels\"\]), (strict=(None|False))?\)", "the zipped sequences have the same length (one axes per "
     "panel, the four columns of each row, a label per legend handle, a label per stored box): strict changes nothing"),
    (r"figures\.x_plot_\w+__", r"squeeze=None", "None is as false as False"),
    (r"figures\.x_plot_(scaling|paired)__", r"\(np\.array\((c|v), (dtype=None)?\) for (c|v) in zip", "the columns are "
     "n_train (integers), means and interval ends (floats, NaN for one seed): an integer n_train array plots and "
     "multiplies (by the shift) to the same values"),
    (r"figures\.x_plot_paired__", r"ax\.axhline\(color=\"k\", lw=0\.8, ls=\"--\"\)", "axhline's y defaults to 0"),
    (r"figures\.x__save_palette_png__", r"format=(\"PNG\"|None)|fig\.savefig\(buf, dpi=dpi, metadata=PNG_METADATA\)|"
     r"format=\"png\", (metadata=None)?\)$", "the PNG matplotlib writes is only an intermediate (format: matplotlib "
     "reads it case-insensitively and defaults to png, which nothing here changes; its text chunks are dropped when "
     "PIL re-encodes it)"),
    (r"figures\.x__save_palette_png__", r"buf\.seek\(1\)", "PIL's Image.open seeks the stream to 0 itself"),
    (r"figures\.x__save_palette_png__", r"quantize\(256, (dither=None)?\)|quantize\(dither=Image\.Dither\.NONE\)",
     "Image.quantize uses dither only with a given palette (none here), and 256 colours is its default"),
    (r"figures\.x__save_palette_png__", r"save\(out, \"png\", optimize|\"PNG\", (optimize=False)?\)$", "PIL reads the "
     "format name case-insensitively; optimize only changes how hard zlib compresses: the same decoded image "
     "(a somewhat larger file)"),
    (r"figures\.x__draw_box__", r"fill=None, color=color|^\s*\)\)$", "matplotlib stores bool(fill) (None is "
     "False), and an artist's clip_on defaults to True"),
    (r"figures\.x_stored_examples__", r"if dataset_path\.is_absolute\(\):", "Path.cwd() / p is p for an absolute "
     "p, and a relative p is opened relative to the working directory anyway: the same file either way"),
    (r"figures\.x_stored_examples__", r"load_dataset\(dataset_path, verify=(None|False), (splits=None)?\)|"
     r"load_dataset\(dataset_path, verify=None, splits", "verify=None is as false as False; loading every split "
     "instead of only the stored one gives the same test arrays (only more work)"),
    (r"figures\.x_stored_examples__", r"np\.asarray\(test\.images\[:n\], (dtype=None)?\)$", "the dataset's images "
     "are float32 already"),
    (r"report\.x__provenance__", r"if \(not df\.empty\) or True else|df\.get\(\"commit\", (None|pd\.Series\(dtype=None\))?"
     r"\)\.dropna|if not df\.empty else 1\) / 60", "result_rows always gives a commit column (the empty table "
     "too), whose sum and set are empty/0 for no runs; and 0 or 1 second of no runs prints 0.0 min"),
    (r"report\.x__provenance__", r"s\.get\('wall_time_s', 1\) / 60", "a sweep without a recorded time prints 0/60 "
     "or 1/60 min: 0.0 both at 0.1-minute resolution"),
    (r"report\.x__short_schedule__", r"train_preset\(d\.train_preset, \)$", "every training preset has the same "
     "epochs and batches per epoch in 2D and 3D (smoke 4, cpu 800, paper 2400 steps): the default dims give the "
     "same step count"),
    (r"figures\.x_plot_examples__", r"np\.argsort\(-p\[\"scores\"\], kind=\"STABLE\"\)", "numpy reads the sort "
     "kind case-insensitively"),
    (r"figures\.x_plot_examples__", r"ax\.set_(xlim\((None, size - 0\.5|-0\.5, (None)?)\)|ylim\((None, -0\.5|"
     r"size - 0\.5, (None)?)\))$", "imshow already set the view to the crop's pixel edges (-0.5, size - 0.5), "
     "and the boxes and labels drawn after it do not move it: an unset limit stays where it is"),
    (r"figures\.x_plot_examples__", r"_draw_box\(ax, b, class_colour\(lab\), \(top, left\), (ls=GT_STYLE, lw=None|"
     r"lw=1\.0)\)$", "GT_STYLE is _draw_box's default style ('-'), and lw=None takes rcParams['patch.linewidth'], "
     "1.0, the width given"),
    (r"report\.x_render_report__", r"\.groupby\(\"n_train\", sort=None\)", "None is as false as sort=False"),
    (r"figures\.x_plot_learning_curves__", r"facet_kws=None\)$", "relplot's facets share the y axis by default"),
    (r"report\.x__csv__", r"to_csv\(index=None, ", "None is as false as index=False"),
    (r"figures\.x__panels__", r"itertuples\(index=None\)|order\.get\(k\[0\], 10\)|\"circles_scale\": 3\}", "index=None is as "
     "false as False; only the order of the ranks matters: circles_scale at 3 still sorts after donuts_pattern (1) "
     "and before unknown tasks (9), which sort after the three known ones with 9 or 10 alike"),
    (r"figures\.x_plot_learning_curves__", r"^\s*\)$", "without facet_kws relplot's facets share the y axis too "
     "(its default)"),
    (r"figures\.x_plot_learning_curves__", r"g\.set_axis_labels\(None, \"validation mAP\"\)", "relplot already "
     "labels the x axes with the column's name, 'epoch'"),
    # toy_data (generate.py, spec.py, palette.py, reference.py)
    (r"^toy_data\.(generate|reference)\.", r"zip\([^()]*, (strict=(None|False))?\)(\]|\), lo)$", "the zipped "
     "sequences have one entry per axis each: strict changes nothing"),
    (r"generate\.x__squared_distances__", r"np\.arange\(sl\.start, sl\.stop, (dtype=None)?\)|\[-2 if a == axis",
     "np.arange of Python ints is int64 already; numpy reads any negative size as the unknown one"),
    (r"generate\.x__fill_sample__", r"if hole >= 0:", "with hole 0 the hole test d2 < 0 is never true: the "
     "lit and mask pixels are the disc either way"),
    (r"reference\.x_generate_sample_loop__", r"spec\.hole_radius >= 0 and", "with hole_radius 0, d2 < 0 is never "
     "true: no pixel is in the hole either way"),
    (r"generate\.x__fill_sample__", r"boxes\[j, axis\] = lo\[axis\] - hit\[0\]", "hit[0] is always 0: the window "
     "starts at the object's first pixel on each axis (|offset| <= ceil(r) - 1 < r along the axis through the "
     "centre, or the clipped border), so lo + 0 == lo - 0"),
    (r"generate\.x__window__", r"reach = math\.ceil\(radius\) \+ 1|int\(c\) \+ reach \+ 2, n\)", "a larger window "
     "holds no more object pixels (the disc test decides), and the boxes are computed from the window's start plus "
     "the first object pixel in it: the same pixels and boxes, only more work"),
    (r"reference\.x_generate_sample_loop__", r"np\.asarray\(rng\.integers\(1, 3, size=k\), (None)?\)$",
     "Generator.integers returns int64 already"),
    (r"reference\.x_generate_sample_loop__", r"hi = \[\[(\+1|-2)\] \* d", "the initial upper bound is "
     "replaced by max(hi, p + 1) >= 1 at the object's first pixel, and every object has pixels"),
    (r"reference\.x_generate_sample_loop__", r"^\s*break$", "leaves the loop over the other objects at a pixel "
     "inside this object's hole: objects never overlap, so no other object has that pixel"),
    (r"generate\.x_resolve_workers__", r"\(os\.cpu_count\(\) or 2\) - 1", "cpu_count() None: min(4, 1) and "
     "max(1, 0) are both 1"),
    (r"spec\.x__validate__", r"isinstance\(s\.task, str\)\) or True else|else 'XX\?XX'", "_validate rejects a task "
     "that is not one of TASKS (strings) before it builds any of these messages: the '?' branch is unreachable"),
    (r"spec\.x__validate__", r"if s\.objects_per_image >= 1:", "with one object the capacity check cannot fail: "
     "grid_capacity is >= 1 once the margin check passed"),
    (r"spec\.xǁTaskSpecǁ__post_init____", r'"(XXradiiXX|RADII)", tuple\(self\.radii\)|'
     r"tuple\(self\.radii\) if (\(_is_seq\(self\.radii\)\) and False|_is_seq\(None\)) else", "_validate stores "
     "radii as a tuple of floats itself (after checking it is a list or tuple of two numbers)"),
    (r"generate\.x__grid_centres__", r"int\(rng\.integers\(span - \(n - 1\) \* step \+ 1\)\)", "Generator."
     "integers(high) is integers(0, high): the same range and the same draw"),
    (r"generate\.x__grid_centres__", r"replace=None\)$", "rng.choice tests replace for truth: None is as false as "
     "False (no cell twice)"),
    # toy_data_io (storage.py, cli.py, preview.py)
    (r"toy_data\.storage\.x__check_sha__", r"f\.read\(None\)", "reading the file in one block instead of 16 MiB "
     "blocks: the same bytes reach the hash (only memory differs)"),
    (r"toy_data\.storage\.x_split_seeds__", r"generate_state\(2, \)|generate_state\(3, np\.uint32\)", "uint32 is "
     "generate_state's default dtype, and its first words do not depend on how many are drawn: the same two words"),
    (r"toy_data\.storage\.x__throttle__", r"len\(pending\) >= max_pending|pending\[: len\(pending\) \+ max_pending\]",
     "at exactly 16 waiting jobs the wait is on none; waiting for all queued jobs instead of all but 16 keeps the "
     "bound: the same bytes in the same order, only less overlap of writing and generating"),
    (r"toy_data\.storage\.x__write_split__", r"max_pending=17", "a bound of 17 waiting jobs instead of 16: memory "
     "only (the chunks, files and hashes are the same)"),
    (r"toy_data\.storage\.x__write_split__", r"class_counts = np\.zeros\(3, (None)?\)$", "float64 instead of int64 "
     "counters: the manifest stores int() of them, the same numbers"),
    (r"toy_data\.storage\.x_write_dataset__", r"cancel_futures=(None|False)", "reached only after a failure: the "
     "chunks still queued in the pool run to no use instead of being cancelled; the same error, no folder left "
     "(only CPU time differs)"),
    (r"toy_data\.storage\.x.SplitArrays.class_counts__", r"minlength=4", "a 4th, empty bin that is never read"),
    (r"toy_data\.storage\.x._NpyWriter.append__", r"ascontiguousarray\(arr, (dtype=None)?\)|\.cast\(\"b\"\)",
     "every chunk already has the writer's dtype (the generator's arrays); signed or unsigned byte views write "
     "and hash the same bytes"),
    (r"toy_data\.cli\.x__up_to_date__", r"verify=None\)", "None is as false as verify=False"),
    (r"toy_data\.storage\.x__load_split__", r'mmap_mode="r", (allow_pickle=None)?\)$', "np.load's allow_pickle "
     "defaults to False, and None is as false (with mmap_mode it only sets the header size limit, as False does)"),
    (r"toy_data\.cli\.x__parser__", r'"--workers", type=int, help=', "argparse's default is None already"),
    (r"toy_data\.preview\.x__panels__", r"\(box\[0\] \+ box\[3\]\) / 2\)", "box coordinates are >= 0, where "
     "int(x / 2) == x // 2"),
    (r"toy_data\.preview\.x_write_preview__",
     r'matplotlib\.use\("(agg|AGG)"\)|interpolation="NEAREST"|ax\.axis\("OFF"\)|format="PNG"',
     "matplotlib lower-cases backend, interpolation, axis and format names"),
    (r"toy_data\.preview\.x_write_preview__", r"plt\.close\(None\)", "closes the current figure, which is this "
     "figure (made by this call, nothing drawn since)"),
    (r"toy_data\.preview\.x_write_preview__", r"squeeze=None|fill=None|legend\(predictions=None\)|verify=None\)",
     "None is as false as False"),
    (r"toy_data\.preview\.x_write_preview__", r"zip\(boxes, labels, (strict=(None|False))?\)", "a sample's boxes "
     "and labels always both have K entries"),
    (r"toy_data\.preview\.x_write_preview__", r"ax\.contour\(msk2 > 0, (levels=None, )?colors",
     "matplotlib >= 3.8 contours a boolean array at level 0.5 by default"),
    (r"toy_data\.preview\.x_write_preview__", r"if \(msk2 >= 0\)\.any\(\)", "every panel shows its object (the "
     "sample's mask, its centre slice or its projection), so the mask has pixels and the guard is true either way"),
]

# Survivors judged cosmetic: the mutant changes only the look of a figure (figure size constants, font
# sizes, line widths, marker sizes, transparency, legend placement, the seaborn theme and palette, the
# saved resolution); what the figure shows (its data, axes, scales, labels, titles, legend entries) is
# unchanged, and a test could only restate the constant. Same form and matching as EQUIVALENT (checked
# after it). They stay survivors in the raw score; each group's page lists them, and the summary gives
# the score counting neither the equivalent nor the cosmetic survivors as mutants.
COSMETIC: list[tuple[str, str, str]] = [
    # evaluation_io (plots.py)
    (r"plots\.x_plot_(pr|froc)__", r"sns\.set_theme\(", "the seaborn theme (style, context): colours of the "
     "background and grid, font scale"),
    (r"plots\.x_plot_(pr|froc)__", r"sns\.color_palette\(None\)", "the palette of the runs' colours (the "
     "current default instead of tab10; one colour per run either way)"),
    (r"plots\.x_plot_(pr|froc)__", r"figsize=\((4\.4|4\.6) \* len\(\w+\), 3\.4\)|figsize=\(3\.[46] \* "
     r"len\(\w+\), 4\.4\)", "the size of a panel in inches (each panel still gets the same width)"),
    (r"plots\.x_plot_(pr|froc)__", r"fontsize=(None|8|9|10)(, loc=|\)$)|for r in rates\], \)$|images\", \)$|"
     r"ax\.legend\(loc=", "a font size (tick labels, legend, title)"),
    (r"plots\.x_plot_(pr|froc)__", r"ax\.legend\(fontsize=7, (loc=None)?\)$", "the legend's place in its panel "
     "(matplotlib's best place instead of a fixed corner)"),
    (r"plots\.x_plot_(pr|froc)__", r"lw=(None|2\.6),$|color=color, label=f", "the curves' line width"),
    (r"plots\.x_plot_froc__", r"\"o\", color=color, (ms=(None|5))?\)$", "the size of the FROC rate markers"),
    # study_report_render (study/report/figures.py)
    (r"figures\.x_plot_(scaling|paired|learning_curves)__", r"sns\.set_theme\(", "the seaborn theme (style, "
     "context): colours of the background and grid, font scale"),
    (r"figures\.x_plot_(scaling|paired)__", r"figsize=\((5\.4 \* len\(panels\), 3\.8|4\.4 \* len\(panels\), 4\.8)\)",
     "the size of a panel in inches (each panel still gets the same width)"),
    (r"figures\.x_plot_(scaling|paired)__", r"savefig\(path, (dpi=(None|111), )?bbox_inches=\"tight\", "
     r"metadata=PNG_METADATA\)$", "the saved resolution"),
    (r"figures\.x_plot_paired__", r"savefig\(path, dpi=110, (bbox_inches=None, )?metadata=PNG_METADATA\)$",
     "the margin around the panels in the saved picture (the paired figure's legend is inside a panel)"),
    (r"figures\.x_plot_scaling__", r"fill_between\(n\[ok\], lo\[ok\], hi\[ok\], color=colour, (alpha=(None|0\.15), )?"
     r"(lw=(None|0|1))?\)$", "the band's transparency and edge width"),
    (r"figures\.x_plot_scaling__", r"fig\.legend\(handles, labels, (loc=(None|\"center left\"), )?(bbox_to_anchor="
     r"(None|\([\d.]+, [\d.]+\)), )?(fontsize=(None|\d+), )?(frameon=(None|True|False),)?$|^\s*title=\"solid: "
     r"seg-supervised\\ndashed: not\\no one-stage, s two-stage\", (title_fontsize=(None|\d+))?\)$",
     "the figure legend's place, frame and font sizes (its entries and title are tested)"),
    (r"figures\.x_plot_scaling__", r"band = 95% t-interval\", (fontsize=(None|11))?\)$", "the title's font size"),
    (r"figures\.x_plot_scaling__", r"bbox_to_anchor=\(1\.0, 0\.5\), fontsize=8, title=\"solid", "the figure legend's "
     "frame"),
    (r"figures\.x_plot_scaling__", r"colour = MODEL_COLOURS\.get\(model, (None)?\)$", "the colour of a model "
     "outside the paper's six (grey, or matplotlib's next cycle colour); the six keep theirs"),
    (r"figures\.x_plot_paired__", r"ax\.errorbar\(n \* shift, mean, yerr=err, color=f\"C\{i\}\", (marker=(None|\"o\"), )?"
     r"(capsize=(None|3|4), )?label=comp\)$", "the mean's marker and the size of the interval's caps"),
    (r"figures\.x_plot_paired__", r"ax\.scatter\(c\.n_train\.to_numpy\(\) \* shift, c\[\"diff\"\], color=f\"C\{i\}\", "
     r"(alpha=(None|0\.4), )?(s=(None|12|13))?\)$", "the seeds' dots' transparency and size"),
    (r"figures\.x_plot_paired__", r"ax\.axhline\(0\.0, (color=(None|\"k\"), )?(lw=(None|0\.8|1\.8), )?(ls=(None|\"--\"))?\)$",
     "the zero line's colour, width and dash (its place at 0 is tested)"),
    (r"figures\.x_plot_paired__", r"axes\[0\]\[-1\]\.legend\((fontsize=(None|8))?\)$|dots = seeds\", "
     r"(fontsize=(None|11))?\)$", "a font size (legend, title)"),
    (r"figures\.x_plot_learning_curves__", r"^\s*(col_wrap=(min\(len\(panels\), [45]\)|None), )?kind=\"line\", "
     r"errorbar=t_errorbar, (height=(None|2\.6|3\.6), )?(aspect=(None|1\.2|2\.2),)?( ?facet_kws=\{\"sharey\": True\}\))?$",
     "the panels' size and how many go in a row"),
    (r"figures\.x_plot_learning_curves__", r"g\.set_titles\(\"\{col_name\}\", (size=(None|9))?\)$|band = 95% "
     r"t-interval\", (y=(None|1\.03|2\.03\d*), )?(fontsize=(None|9|10))?\)$", "a font size and the title's height"),
    (r"figures\.x_plot_learning_curves__", r"g\.savefig\(path, (dpi=(None|80|81), )?(bbox_inches=(None|\"tight\"), )?"
     r"metadata=PNG_METADATA\)$", "the saved resolution and margin"),
    (r"figures\.x_plot_examples__", r"ax\.imshow\(images\[j\]\[top:top \+ size, left:left \+ size\], (cmap=(None|"
     r"\"gray\"), )?(vmin=(None|0|1), )?(vmax=(None|1\.2|2\.2))?\)$", "the grey levels the image is shown with "
     "(the colour map and its range; the pixels shown are tested)"),
    (r"figures\.x_plot_examples__", r":\.2f\}\", color=color, (fontsize=(None|8),|clip_on=True\))?$|n=\{r\.n_train\}\", "
     r"(fontsize=(None|9))?\)$|\['labels'\]\[0\]\)\}\)\", (fontsize=(None|9))?\)$|\{legend\(\)\}\", "
     r"(fontsize=(None|9))?\)$", "a font size (score labels, row and column titles, title)"),
    (r"figures\.x__save_palette_png__", r"\.convert\(None\)\.quantize", "the colour quantisation (fast octree on "
     "RGBA instead of median cut on RGB): another 256-colour approximation of the same picture"),
]

# mutmut's exit-code statuses that count as killed / as not tested
KILLED = {"killed", "timeout", "caught by type check"}
SKIPPED = {"skipped"}
NOT_RUN = {"not checked"}  # an interrupted run (partial figures: the report says how many)


def _copy_repo(dest: Path, tests_rev: str | None = None) -> None:
    """The tracked files (as in the working tree) and the compiled extension, into ``dest``; with
    ``tests_rev``, tests/ as at that git revision (to measure the score of older tests)."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    names = [n for n in files.decode().split("\0") if n]
    names += [str(p.relative_to(ROOT)) for p in (ROOT / "retina_unet").glob("_C*.so")]
    for name in names:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    if tests_rev:
        shutil.rmtree(dest / "tests")
        listed = subprocess.run(["git", "ls-tree", "-r", "--name-only", tests_rev, "tests/"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.split()
        for name in listed:
            blob = subprocess.run(["git", "show", f"{tests_rev}:{name}"], cwd=ROOT, capture_output=True,
                                  check=True).stdout
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(blob)
        # the working tree's conftest (hypothesis profiles, incl. "mutation"), so scores compare
        shutil.copy2(ROOT / "tests" / "conftest.py", dest / "tests" / "conftest.py")


def _configure(dest: Path, modules: list[str], tests: list[str]) -> None:
    """Point mutmut at the modules and tests through a [tool.mutmut] section of the copy's pyproject."""
    toml = (dest / "pyproject.toml").read_text()
    lst = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"  # noqa: E731
    toml += (
        "\n[tool.mutmut]\n"
        'source_paths = ["retina_unet", "toy_data"]\n'
        f"only_mutate = {lst(modules)}\n"
        f"pytest_add_cli_args_test_selection = {lst(tests)}\n"
        'pytest_add_cli_args = ["-p", "no:randomly", "-p", "no:cacheprovider", "-q"]\n'
        "use_git_change_detection = false\n"
    )
    (dest / "pyproject.toml").write_text(toml)


def _mutmut(dest: Path, *args: str, check: bool = True) -> str:
    env = {**os.environ, "PYTHONPATH": str(dest), "OMP_NUM_THREADS": "1", "HYPOTHESIS_PROFILE": "mutation"}
    r = subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=dest, env=env, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"mutmut {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


_DIFFS = """
import json, sys
from mutmut.__main__ import find_mutant, get_diff_for_mutant
out = {}
for name in json.load(sys.stdin):
    out[name] = get_diff_for_mutant(name, path=find_mutant(name).path).strip()
print(json.dumps(out))
"""


def _diffs(dest: Path, names: list[str]) -> dict[str, str]:
    """The diff of each named mutant (one process for all: ``mutmut show`` costs a start-up each)."""
    env = {**os.environ, "PYTHONPATH": str(dest)}
    r = subprocess.run([sys.executable, "-c", _DIFFS], cwd=dest, env=env, input=json.dumps(names),
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _statuses(dest: Path) -> dict[str, str]:
    statuses: dict[str, str] = {}
    for line in _mutmut(dest, "results", "--all", "true").splitlines():
        key, sep, status = line.strip().rpartition(": ")
        if sep and key:
            statuses[key] = status.strip()
    return statuses


def _rerun_survivors(dest: Path, max_children: int) -> tuple[int, float]:
    """Re-test the last full run's survivors in its copy with the working tree's current tests; when
    that run was interrupted, then also run the mutants it did not reach (with the current tests).

    Sound only when tests were added, not changed, since that run (a killed mutant then stays
    killed) and the package code is unchanged: the latter is checked here."""
    if not (dest / "mutants").is_dir():
        raise RuntimeError(f"{dest}: no full run to re-test the survivors of")
    interrupted = not (dest / "run-seconds.json").is_file()
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    names = [n for n in files.decode().split("\0") if n]
    changed = [n for n in names if n.startswith(("retina_unet/", "toy_data/")) and (ROOT / n).is_file()
               and (not (dest / n).is_file() or (dest / n).read_bytes() != (ROOT / n).read_bytes())]
    if changed:
        raise RuntimeError(f"package code changed since the last full run ({changed[:5]}): run the group in full")
    for n in names:
        if n.startswith("tests/") and (ROOT / n).is_file():
            (dest / n).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / n, dest / n)
    statuses = _statuses(dest)
    survivors = sorted(k for k, s in statuses.items() if s not in KILLED | SKIPPED | NOT_RUN)
    not_run = sum(s in NOT_RUN for s in statuses.values()) if interrupted else 0
    diffs = _diffs(dest, survivors)
    # judged equivalent (no test can kill them) or cosmetic (no test should): not re-tested
    todo = [k for k in survivors if not _equivalent(k, diffs[k]) and not _cosmetic(k, diffs[k])]
    info = {"survivors": len(survivors), "retested": len(todo), "seconds": None, "complete": False,
            "commit": _commit(), "of": len(statuses)}
    # how far the full run itself got, kept across re-tests (one that went on with its unrun mutants first)
    last = json.loads((dest / "rerun.json").read_text()) if (dest / "rerun.json").is_file() else {}
    first = last.get("interrupted_after")
    if first is not None or not_run:
        info["interrupted_after"] = first if first is not None else len(statuses) - not_run
    (dest / "rerun.json").write_text(json.dumps(info))  # an interrupted re-test still says so
    t0 = time.perf_counter()
    log = _mutmut(dest, "run", "--max-children", str(max_children), *todo, check=False) if todo else ""
    if not_run:  # mutmut run without names runs only the mutants that have no result yet
        log += _mutmut(dest, "run", "--max-children", str(max_children), check=False)
    info.update(seconds=time.perf_counter() - t0, complete=True)
    (dest / "mutmut-rerun.log").write_text(log)
    (dest / "rerun.json").write_text(json.dumps(info))
    return len(todo), info["seconds"]


def run_group(name: str, max_children: int, tests_rev: str | None = None, reuse: bool = False,
              rerun_survivors: bool = False) -> dict:
    """Mutate and test one group (``reuse``: only re-read the results of the last run in its copy;
    ``rerun_survivors``: re-test only the last run's survivors, with the current tests)."""
    modules, tests = GROUPS[name]
    dest = WORK / (name + (f"@{tests_rev}" if tests_rev else ""))
    rerun = None
    if rerun_survivors:
        _rerun_survivors(dest, max_children)
    if reuse or rerun_survivors:
        timing = dest / "run-seconds.json"  # absent when the run was interrupted
        seconds = json.loads(timing.read_text()) if timing.is_file() else None
        if (dest / "rerun.json").is_file():  # the last word on this copy was a re-test of survivors
            rerun = json.loads((dest / "rerun.json").read_text())
    else:
        _copy_repo(dest, tests_rev)
        _configure(dest, modules, tests)
        t0 = time.perf_counter()
        log = _mutmut(dest, "run", "--max-children", str(max_children), check=False)
        seconds = time.perf_counter() - t0
        (dest / "mutmut-run.log").write_text(log)
        (dest / "run-seconds.json").write_text(json.dumps(seconds))
    statuses = _statuses(dest)
    if not statuses:
        raise RuntimeError(f"mutmut produced no results for {name}; see {dest / 'mutmut-run.log'}")
    survivors = sorted(k for k, s in statuses.items() if s not in KILLED | SKIPPED | NOT_RUN)
    diffs = _diffs(dest, survivors)
    equivalent = {k: why for k in survivors if (why := _equivalent(k, diffs[k]))}
    cosmetic = {k: why for k in survivors if k not in equivalent and (why := _cosmetic(k, diffs[k]))}
    counts: dict[str, int] = {}
    for s in statuses.values():
        counts[s] = counts.get(s, 0) + 1
    killed = sum(n for s, n in counts.items() if s in KILLED)
    tested = sum(n for s, n in counts.items() if s not in SKIPPED | NOT_RUN)
    not_run = sum(n for s, n in counts.items() if s in NOT_RUN)
    per_module: dict[str, list[int]] = {}
    for k, s in statuses.items():
        mod = k.rsplit(".", 1)[0]  # "<module>.x_<function>__mutmut_<n>" (mutmut's names)
        kt = per_module.setdefault(mod, [0, 0])
        kt[0] += s in KILLED
        kt[1] += s not in SKIPPED | NOT_RUN
    return {
        "group": name,
        "modules": modules,
        "tests": tests,
        "score": killed / tested if tested else None,
        "killed": killed,
        "tested": tested,
        "not_run": not_run,
        "counts": counts,
        "per_module": {m: {"killed": k, "tested": t} for m, (k, t) in sorted(per_module.items())},
        "statuses": dict(sorted(statuses.items())),
        "survivor_diffs": diffs,
        "equivalent": equivalent,
        "score_without_equivalent": killed / (tested - len(equivalent)) if tested > len(equivalent) else None,
        "cosmetic": cosmetic,
        "score_without_explained": (killed / (tested - len(equivalent) - len(cosmetic))
                                    if tested > len(equivalent) + len(cosmetic) else None),
        "seconds": None if seconds is None else round(seconds, 1),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "commit": _commit(),
        "tests_rev": tests_rev,
        "command": f"python -m reports.mutation {name}" + (f" --tests-rev {tests_rev}" if tests_rev else ""),
        "rerun": rerun,
        "env": {"python": platform.python_version(), "mutmut": _mutmut_version(), "cpus": os.cpu_count()},
    }


def _judged(rules: list[tuple[str, str, str]], name: str, diff: str) -> str | None:
    """The reason of the first rule whose name regex matches the mutant and whose diff regex matches one
    of its added lines, or None."""
    added = [ln[1:].rstrip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    for name_re, diff_re, why in rules:
        if re.search(name_re, name) and any(re.search(diff_re, ln) for ln in added):
            return why
    return None


def _equivalent(name: str, diff: str) -> str | None:
    return _judged(EQUIVALENT, name, diff)


def _cosmetic(name: str, diff: str) -> str | None:
    return _judged(COSMETIC, name, diff)


def _commit() -> str:
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return r.stdout.strip() + ("+dirty" if dirty else "")


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def write_group(res: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    stem = res["group"] + (f"@{res['tests_rev']}" if res["tests_rev"] else "")
    (OUT / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [
        f"# Mutation testing: {res['group']}" + (f" (tests as at {res['tests_rev']})" if res["tests_rev"] else ""),
        "",
        f"Generated by `{res['command']}` (mutmut {res['env']['mutmut']}, Python {res['env']['python']}) on "
        f"{res['date']} at commit {res['commit']}, {_secs(res['seconds'])}. Do not edit: rerun the command.",
        "",
        f"- mutated: {', '.join(f'`{m}`' for m in res['modules'])}",
        f"- tests: {', '.join(f'`{t}`' for t in res['tests'])}",
        f"- **score: {_pct(res['score'])}** ({res['killed']} killed of {res['tested']}); "
        + ", ".join(f"{k}: {v}" for k, v in sorted(res["counts"].items())),
        *([f"- the full run's survivors not judged equivalent or cosmetic ({res['rerun'].get('retested')} of "
            f"{res['rerun']['survivors']}) were then re-tested with the tests as at {res['rerun']['commit']} "
            f"(`{res['command']} --rerun-survivors`, {_secs(res['rerun']['seconds'])}"
            + ("" if res["rerun"].get("complete", True) else "; **interrupted**: the survivors it did not reach "
               "still count as survivors") + "): tests were only added since, so every mutant killed in the "
            "full run stays killed"
            + (f"; that run had been interrupted after {res['rerun']['interrupted_after']} of {res['rerun']['of']} "
               "mutants, and the re-tests went on with the others (with the tests of their time)"
               if res["rerun"].get("interrupted_after") is not None else "")
            + (f". {res['rerun']['note']}" if res["rerun"].get("note") else "")]
          if res.get("rerun") else []),
        *([f"- **partial**: the run was interrupted; {res['not_run']} of {res['tested'] + res['not_run']} mutants "
            "were not run and are left out of the figures"] if res.get("not_run") else []),
        f"- score counting the {len(res['equivalent'])} survivors judged equivalent (below) as not mutants: "
        f"**{_pct(res['score_without_equivalent'])}**",
        f"- score counting neither those nor the {len(res.get('cosmetic', {}))} survivors judged cosmetic (below: "
        f"they change only the look of a figure) as mutants: **{_pct(_without_explained(res))}**",
        "",
        "| module | killed | tested | score |",
        "| --- | ---: | ---: | ---: |",
    ]
    for m, kt in res["per_module"].items():
        lines.append(f"| `{m}` | {kt['killed']} | {kt['tested']} | {_pct(kt['killed'] / kt['tested'] if kt['tested'] else None)} |")
    lines += ["", f"## Surviving mutants ({len(res['survivor_diffs'])})", ""]
    for k, diff in res["survivor_diffs"].items():
        why = res["equivalent"].get(k)
        cosmetic = res.get("cosmetic", {}).get(k)
        note = f"; equivalent: {why}" if why else (f"; cosmetic: {cosmetic}" if cosmetic else "")
        lines += [f"### `{k}` ({res['statuses'][k]}{note})", "",
                  "```diff", diff, "```", ""]
    (OUT / f"{stem}.md").write_text("\n".join(lines) + "\n")


def write_summary() -> None:
    rows = []
    for name in GROUPS:
        p = OUT / f"{name}.json"
        if p.is_file():
            r = json.loads(p.read_text())
            partial = f" (partial: {r['not_run']} not run)" if r.get("not_run") else ""
            rows.append(f"| [{name}]({name}.md) | {_pct(r['score'])}{partial} | {_pct(r['score_without_equivalent'])} | "
                        f"{_pct(_without_explained(r))} | {r['killed']} / {r['tested']} | "
                        f"{len(r['survivor_diffs'])} ({len(r['equivalent'])}, {len(r.get('cosmetic', {}))}) | "
                        f"{_secs(r['seconds'])} | {r['date']} | {r['commit']} |")
        else:
            rows.append(f"| {name} | not run | | | | | | | |")
    text = "\n".join([
        "# Mutation testing",
        "",
        "Generated by `make mutate` (`python -m reports.mutation [GROUP...]`); do not edit. Each group's "
        "page lists its surviving mutants with their diffs. Target: >= 85 % killed. *score*: killed / tested, the "
        "raw rate; *without equivalent*: the survivors judged equivalent (no test can tell them from the code) "
        "not counted as mutants; *and cosmetic*: nor those judged cosmetic (they change only the look of a "
        "figure: sizes, fonts, line widths, legend places, theme; a test could only restate the constant). "
        "Both judgements are rules in `reports/mutation.py` (EQUIVALENT, COSMETIC), each with its reason on "
        "the group's page.",
        "",
        "| group | score | score without equivalent | score without equivalent and cosmetic | killed / tested | "
        "survivors (equivalent, cosmetic) | time | date | commit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        *rows,
        "",
    ])
    (OUT / "README.md").write_text(text)


def _without_explained(r: dict) -> float | None:
    """The score counting neither the equivalent nor the cosmetic survivors as mutants (results written
    before COSMETIC existed have none)."""
    if "score_without_explained" in r:
        return r["score_without_explained"]
    left = r["tested"] - len(r["equivalent"])
    return r["killed"] / left if left > 0 else None


def _secs(x) -> str:
    return "time not recorded" if x is None else f"{x:.0f} s"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="parallel mutants")
    ap.add_argument("--list", action="store_true", help="print the groups and exit")
    ap.add_argument("--tests-rev", help="use tests/ as at this git revision (score of older tests); "
                    "results go to <group>@<rev>.md/.json, not into the summary")
    ap.add_argument("--reuse", action="store_true", help="re-read the last run's results (no new run)")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="re-test only the last full run's survivors in its copy, with the working tree's tests "
                    "(after adding tests; refused when the package code changed since that run); an interrupted "
                    "run then goes on with the mutants it did not reach")
    args = ap.parse_args(argv)
    if args.list:
        for name, (mods, tests) in GROUPS.items():
            print(f"{name}: mutates {' '.join(mods)}; tests {' '.join(tests)}")
        return 0
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}: expected some of {', '.join(GROUPS)}")
    for name in args.groups or list(GROUPS):
        print(f"[mutation] {name} ...", flush=True)
        res = run_group(name, args.max_children, args.tests_rev, args.reuse, args.rerun_survivors)
        write_group(res)
        if not args.tests_rev:
            write_summary()
        print(f"[mutation] {name}: {_pct(res['score'])} ({res['killed']}/{res['tested']}), "
              f"{len(res['survivor_diffs'])} survivors, {_secs(res['seconds'])}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
