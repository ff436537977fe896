"""Cross-modal alignment benchmark: variants of the loss, hub-reducing scorings, generalised zero-shot.

Run `python benchmarks/alignment.py [--quick] [--datasets avmnist tuxpaint] [--seeds 0 1]`
(with `MMKERAS_DATA_DIR` pointing at a folder holding FSDD for avmnist). For
each dataset, each variant (`DEFAULT_VARIANTS`: instance pairing, label-aware
contrast, label-aware contrast plus a classification head per tower or one
shared head; with `--variants`, also the partner-share variants of
`VARIANTS`) and each seed it:

1. aligns two modalities with a contrastive dual encoder (`pretrain_encoder`)
   on the train split's pairs, leaving out every example of the held-out
   classes (and their words: the text vocabulary is learned from the other
   classes' descriptions only);
2. measures cross-modal retrieval on the test split, both directions, at each
   relevance level, on all test examples and on the seen classes, with cosine,
   CSLS and inverted-softmax scoring and with diversified (MMR) lists:
   Recall@1/5/10, precision@5/10, mean and median rank, and the hubness of the
   top-10 lists, next to the chance level;
3. classifies images of the held-out classes zero-shot by prototypes of K
   exemplars embedded by the other tower: among the unseen classes, among all
   (generalised), calibrated on seen validation images, and with an
   "unknown" threshold;
4. reports the joint variant's heads' test accuracy, and, with `--finetune`,
   trains a classifier on 10% of the train labels from scratch and from the
   aligned towers.

The figures (means ± std over the seeds) are printed and saved in
`benchmarks/results/alignment_<dataset>.{json,md}` with the command that made them.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# What is aligned and held out in each dataset. `zero_shot_prompts`: the tower
# that names the classes (its feature's values are the prompts).
SETTINGS = {
    "avmnist": {
        "modalities": ("image", "audio"),
        "holdout": ("8", "9"),
        "retrieval_levels": ("class",),  # pairs are made by digit: no recording belongs to one image
        "class_name_prompts": None,  # a digit's name, spoken, IS a recording of it: see the prompts
    },
    "tuxpaint": {
        "modalities": ("image", "text"),
        "holdout": ("food", "vehicles"),
        "retrieval_levels": ("instance", "class"),
        # The descriptions are French; these are the category names in French.
        "class_name_prompts": {
            "animals": "animaux", "clothes": "vêtements", "food": "nourriture", "household": "maison",
            "plants": "plantes", "seasonal": "saisons", "space": "espace", "symbols": "symboles",
            "town": "ville", "vehicles": "véhicules",
        },
    },
}
# Model sizes and schedules: quick fits the whole benchmark in minutes on 2 CPU cores.
QUICK = {
    "avmnist": {
        "encoder": {"embed_dim": 64, "branch_dim": 64, "dropout_rate": 0.1, "branch_options": {
            "image": {"stages": (16, 32), "convs_per_stage": 1},
            "audio": {"encoder": "conv1d", "conv_stages": (32, 64)}}},
        "epochs": 20, "batch_size": 64, "learning_rate": 3e-3,
        "finetune_epochs": 30, "finetune_batch_size": 32, "finetune_learning_rate": 1e-3,
    },
    "tuxpaint": {
        "encoder": {"embed_dim": 64, "branch_dim": 64, "dropout_rate": 0.1, "branch_options": {
            "image": {"stages": (16, 32, 64), "convs_per_stage": 1},
            "text": {"token_dim": 32, "lstm_units": 32}}},
        "epochs": 40, "batch_size": 64, "learning_rate": 2e-3,
        "finetune_epochs": 40, "finetune_batch_size": 16, "finetune_learning_rate": 1e-3,
    },
}
# The full budget: sized so that both datasets, three variants and two seeds fit in about 25 minutes on 2 shared
# CPU cores. The image branch is (16, 32, 64), which reaches about 0.71 image-only accuracy on avmnist (see
# time_to_accuracy_notes.md), the learning rate 1e-3 (3e-3 left the quick image tower at chance-like accuracy).
FULL = {
    "avmnist": {**QUICK["avmnist"], "encoder": {**QUICK["avmnist"]["encoder"], "branch_options": {
        "image": {"stages": (16, 32, 64), "convs_per_stage": 1},
        "audio": {"encoder": "conv1d", "conv_stages": (32, 64)}}},
        # 30 epochs: 10 left the towers' heads under-trained (class-level R@1 in the label space 0.49 / 0.58
        # against 0.61 / 0.66 at 30, alignment_avmnist_30_epochs.md), and a run now takes about 35 s.
        "epochs": 30, "learning_rate": 1e-3, "finetune_epochs": 40},
    "tuxpaint": {**QUICK["tuxpaint"], "epochs": 40, "learning_rate": 2e-3, "finetune_epochs": 60},
}
PROMPT_COUNTS = (1, 5)
PROMPT_DRAWS = 20
LABEL_FRACTION = 0.1


def load_arrays(spec, split: str) -> tuple[dict, np.ndarray]:
    """A split's decoded features (with presence flags) and labels, as NumPy arrays."""
    from mmkeras.data.pipeline import make_dataset

    parts: dict[str, list] = {}
    labels = []
    for features, label in make_dataset(spec, split, batch_size=256):
        for key, value in features.items():
            parts.setdefault(key, []).append(value.numpy())
        labels.append(label.numpy())
    return {key: np.concatenate(values) for key, values in parts.items()}, np.concatenate(labels)


def retrieval_figures(encoder, spec, levels, holdout, scoring="cosine", space="embedding", diversity=0.0,
                      nearest_first=1) -> dict:
    """Test-split retrieval in both directions at each relevance level, with chance and hubness, all and seen classes.

    `space="classes"` retrieves in the heads' label space (`mmkeras.alignment.class_space`): by the dot
    product of class probabilities, the probability that query and item share a class. `diversity` > 0 orders
    each list by maximal marginal relevance (`mmkeras.alignment.diversity`) after its `nearest_first` items.
    """
    from mmkeras.alignment.metrics import cross_modal_retrieval
    from mmkeras.alignment.retrieval import class_space, embed_dataset
    from mmkeras.data.pipeline import make_dataset

    embeddings, labels, complete = embed_dataset(encoder, make_dataset(spec, "test", batch_size=128))
    if space == "classes":
        embeddings = class_space(encoder, embeddings)
    holdout_ids = [spec.label.class_names.index(c) for c in holdout]
    figures = {}
    for subset, keep in (("all_test", complete), ("seen_classes", complete & ~np.isin(labels, holdout_ids))):
        kept = {name: values[keep] for name, values in embeddings.items()}
        for level in levels:
            result = cross_modal_retrieval(kept, labels=labels[keep] if level == "class" else None,
                                           scoring=scoring, hubness_k=HUBNESS_K, diversity=diversity,
                                           nearest_first=nearest_first)
            result["num_examples"] = int(keep.sum())
            figures[f"{subset}/{level}"] = result
    return figures


def zero_shot_figures(encoder, spec, setting, train, train_labels, test_set, validation_set, seed) -> dict:
    """Zero-shot on held-out-class test images: K-exemplar prototypes (random draws), generalised and calibrated."""
    from mmkeras.alignment.retrieval import embed
    from mmkeras.alignment.zero_shot import (
        UNKNOWN,
        calibrate_zero_shot,
        classify_scores,
        exemplar_prototypes,
    )

    image_name, prompt_name = (f.name for f in _features(spec, setting["modalities"]))
    holdout_ids = [spec.label.class_names.index(c) for c in setting["holdout"]]
    seen = ~np.isin(np.arange(spec.num_classes), holdout_ids)
    present = train[f"{prompt_name}_present"]
    prompt_vectors = embed(encoder, prompt_name, train[prompt_name][present])
    prompt_labels = train_labels[present]
    rng = np.random.default_rng(seed)
    (test, labels), (validation, validation_labels) = test_set, validation_set
    image_vectors = embed(encoder, image_name, test[image_name])
    validation_seen = np.isin(validation_labels, np.flatnonzero(seen))
    validation_vectors = embed(encoder, image_name, validation[image_name][validation_seen])
    validation_labels = validation_labels[validation_seen]
    unseen = np.isin(labels, holdout_ids)
    results = {"holdout": list(setting["holdout"]), "num_unseen_images": int(unseen.sum()),
               "num_seen_images": int((~unseen).sum()), "prompts": {}}
    for count in PROMPT_COUNTS:
        scores = {key: [] for key in ("unseen_among_unseen", "unseen_among_all", "seen_among_all",
                                      "calibrated_unseen_among_all", "calibrated_seen_among_all",
                                      "unseen_called_unknown", "seen_called_unknown", "calibration")}
        for _ in range(PROMPT_DRAWS):
            prototypes = exemplar_prototypes(prompt_vectors, prompt_labels, spec.num_classes, count, seed=rng)
            similarities = image_vectors @ prototypes.T
            scores["unseen_among_unseen"].append(_accuracy(image_vectors[unseen], labels[unseen], prototypes,
                                                           holdout_ids))
            scores["unseen_among_all"].append(_accuracy(image_vectors[unseen], labels[unseen], prototypes, None))
            scores["seen_among_all"].append(_accuracy(image_vectors[~unseen], labels[~unseen], prototypes, None))
            calibration = calibrate_zero_shot(validation_vectors @ prototypes.T, validation_labels, seen)
            predictions = classify_scores(similarities, seen=seen, calibration=calibration["calibration"]).predictions
            scores["calibrated_unseen_among_all"].append(float(np.mean(predictions[unseen] == labels[unseen])))
            scores["calibrated_seen_among_all"].append(float(np.mean(predictions[~unseen] == labels[~unseen])))
            scores["calibration"].append(calibration["calibration"])
            # Open set: only the seen prototypes, and a threshold that accepts 95% of seen validation images.
            open_set = calibrate_zero_shot(validation_vectors @ prototypes[seen].T,
                                           np.searchsorted(np.flatnonzero(seen), validation_labels),
                                           np.ones(int(seen.sum()), bool))
            flagged = classify_scores(similarities[:, seen],
                                      unknown_threshold=open_set["unknown_threshold"]).predictions == UNKNOWN
            scores["unseen_called_unknown"].append(float(np.mean(flagged[unseen])))
            scores["seen_called_unknown"].append(float(np.mean(flagged[~unseen])))
        # The mean over the draws (the std over seeds is added by the summary); the draws' spread is kept too.
        results["prompts"][f"{count}_per_class"] = {
            **{key: float(np.mean(values)) for key, values in scores.items()},
            **{f"{key}_draw_std": float(np.std(values)) for key, values in scores.items()},
        }
    names = setting["class_name_prompts"]
    if names:
        vectors = embed(encoder, prompt_name, [names[c] for c in spec.label.class_names])
        unknown = _out_of_vocabulary(encoder, prompt_name, list(names.values()))
        # Names that are all out of vocabulary embed identically: argmax would just pick the first class.
        informative = not all(names[c] in unknown for c in setting["holdout"])
        results["class_names"] = {
            "unseen_among_unseen": (
                _accuracy(image_vectors[unseen], labels[unseen], vectors, holdout_ids) if informative else None
            ),
            "unseen_among_all": _accuracy(image_vectors[unseen], labels[unseen], vectors, None),
            "out_of_vocabulary": unknown,
        }
    results["chance"] = {"unseen_among_unseen": 1 / len(holdout_ids), "unseen_among_all": 1 / spec.num_classes,
                         "seen_among_all": 1 / spec.num_classes}
    return results


def _accuracy(image_vectors, labels, prototypes, candidate_ids) -> float:
    if len(labels) == 0:
        return float("nan")
    candidates = np.arange(len(prototypes)) if candidate_ids is None else np.asarray(candidate_ids)
    predictions = candidates[np.argmax(image_vectors @ prototypes[candidates].T, axis=1)]
    return float(np.mean(predictions == labels))


def _out_of_vocabulary(encoder, feature_name, words) -> list:
    from mmkeras.alignment.pretrain import encoder_vocabularies

    vocabulary = set(encoder_vocabularies(encoder)[feature_name])
    return [w for w in words if w.lower() not in vocabulary]


def finetune_figures(encoder, spec, options, train, train_labels, test, test_labels, seed) -> dict:
    """The same classifier on 10% of the train labels, from scratch and from the aligned towers."""
    import keras
    import tensorflow as tf

    from mmkeras.alignment.pretrain import (
        build_classifier_from_encoder,
        encoder_vocabularies,
        label_fraction_indices,
    )
    from mmkeras.evaluation.metrics import classification_report, confusion_matrix
    from mmkeras.models.classifier import build_classifier

    chosen = label_fraction_indices(train_labels, LABEL_FRACTION, seed=seed)
    subset = {key: values[chosen] for key, values in train.items()}
    classifier_options = {"fusion": "concat", "units": 64, "dropout_rate": 0.3, "modality_dropout": 0.1, "seed": seed}
    branch_config = encoder.branch_config
    results = {"labelled_examples": len(chosen), "label_fraction": LABEL_FRACTION,
               "epochs": options["finetune_epochs"], "classifier": classifier_options}
    for variant in ("scratch", "aligned_towers"):
        keras.utils.set_random_seed(seed)
        if variant == "scratch":
            classifier = build_classifier(
                spec, embed_dim=branch_config["embed_dim"], branch_options=branch_config["branch_options"],
                vocabularies=encoder_vocabularies(encoder), **classifier_options,
            )
        else:
            classifier = build_classifier_from_encoder(encoder, spec, **classifier_options)
        classifier.compile(
            keras.optimizers.Adam(options["finetune_learning_rate"]),
            loss={"probabilities": "sparse_categorical_crossentropy"},
        )
        data = (tf.data.Dataset.from_tensor_slices((subset, {"probabilities": train_labels[chosen]}))
                .shuffle(len(chosen), seed=seed).batch(options["finetune_batch_size"]))
        started = time.time()
        history = classifier.fit(data, epochs=options["finetune_epochs"], verbose=0, shuffle=False)
        test_data = tf.data.Dataset.from_tensor_slices(test).batch(256)
        predictions = np.argmax(classifier.predict(test_data, verbose=0)["probabilities"], axis=1)
        report = classification_report(confusion_matrix(test_labels, predictions, spec.num_classes),
                                       spec.label.class_names)
        results[variant] = {"test_accuracy": report["accuracy"], "test_macro_f1": report["macro_f1"],
                            "final_train_loss": float(history.history["loss"][-1]),
                            "seconds": round(time.time() - started, 1)}
    results["gain"] = {
        "test_accuracy": results["aligned_towers"]["test_accuracy"] - results["scratch"]["test_accuracy"],
        "test_macro_f1": results["aligned_towers"]["test_macro_f1"] - results["scratch"]["test_macro_f1"],
    }
    return results


# The training variants compared: the contrastive loss's positives, and the joint objective's head weight.
VARIANTS = {
    "pairs": {"positives": "pairs", "classification_weight": 0.0},
    "labels": {"positives": "labels", "classification_weight": 0.0},
    "labels_joint": {"positives": "labels", "classification_weight": 1.0},
    "labels_shared_head": {"positives": "labels", "classification_weight": 1.0, "classification_head": "shared"},
    # Half of the target on the row's own partner, half over its class: for data paired by instance with labels.
    "labels_partner": {"positives": "labels", "partner_share": 0.5, "classification_weight": 0.0},
    "labels_partner_shared_head": {"positives": "labels", "partner_share": 0.5, "classification_weight": 1.0,
                                   "classification_head": "shared"},
}
# What a run without --variants trains (the main `alignment_<dataset>` files); the partner-share variants are
# measured with --variants into their own files (`alignment_*_partner_share*.md`).
DEFAULT_VARIANTS = ("pairs", "labels", "labels_joint", "labels_shared_head")
SCORINGS = ("cosine", "csls", "inverted_softmax", "centred")
# Variants with classification heads are also measured in the heads' label space (cosine there).
CLASS_SPACE = "class_space"
# Lists ordered by maximal marginal relevance (MMR's usual even weight, not tuned on these splits): classic MMR by
# cosine in the embedding space, and MMR after the 5 nearest items (the first five stay the plain ranking's) in the
# embedding space and in the label space (variants with heads). Name -> (space, nearest_first).
DIVERSITY = 0.5
DIVERSE = {"cosine_mmr": ("embedding", 1), "cosine_mmr_after_5": ("embedding", 5),
           "class_space_mmr_after_5": ("classes", 5)}
HUBNESS_K = 10


def train_variant(spec, setting, options, variant: str, seed: int, verbose: int = 0):
    """Align one variant's encoder on the train split without the held-out classes; returns (encoder, figures)."""
    from mmkeras.alignment.contrastive import ContrastiveLoss
    from mmkeras.alignment.pretrain import pretrain_encoder

    started = time.time()
    encoder, history = pretrain_encoder(
        spec, setting["modalities"], epochs=options["epochs"], batch_size=options["batch_size"],
        learning_rate=options["learning_rate"],
        loss=ContrastiveLoss(positives=VARIANTS[variant]["positives"],
                             partner_share=VARIANTS[variant].get("partner_share")),
        exclude_classes=setting["holdout"], seed=seed, verbose=verbose,
        classification_weight=VARIANTS[variant]["classification_weight"],
        classification_head=VARIANTS[variant].get("classification_head", "per_tower"), **options["encoder"],
    )
    return encoder, {"epochs": options["epochs"], "first_loss": float(history.history["loss"][0]),
                     "final_loss": float(history.history["loss"][-1]), "temperature": encoder.temperature,
                     "seconds": round(time.time() - started, 1)}


def head_figures(encoder, spec, holdout) -> dict:
    """Test accuracy of each tower's classification head and of their averaged probabilities (joint variant)."""
    import keras

    from mmkeras.alignment.retrieval import embed_dataset
    from mmkeras.data.pipeline import make_dataset

    embeddings, labels, complete = embed_dataset(encoder, make_dataset(spec, "test", batch_size=128))
    probabilities = {name: keras.ops.convert_to_numpy(keras.ops.softmax(logits))[complete]
                     for name, logits in encoder.class_logits(embeddings).items()}
    probabilities["fused (mean of heads)"] = np.mean(list(probabilities.values()), axis=0)
    labels = labels[complete]
    seen = ~np.isin(labels, [spec.label.class_names.index(c) for c in holdout])
    return {name: {"all_test": float(np.mean(np.argmax(p, 1) == labels)),
                   "seen_classes": float(np.mean(np.argmax(p, 1)[seen] == labels[seen]))}
            for name, p in probabilities.items()}


def run_dataset(
    name: str, *, quick: bool = True, seeds=(0, 1), variants=DEFAULT_VARIANTS, finetune: bool = False,
    verbose: int = 0, epochs: int | None = None, holdout: tuple[str, ...] | None = None,
    branch_options: dict | None = None,
    rare_token_warmup: float | None = None,
) -> dict:
    """Align each variant with each seed; measure retrieval (every scoring), hubness, zero-shot, heads.

    `branch_options` (by modality) replaces the budget's towers' branch options; `{}` builds the
    classifier's default branches. `rare_token_warmup` is `pretrain_encoder`'s (None: its default).
    """
    import keras

    import mmkeras

    setting, options = dict(SETTINGS[name]), dict((QUICK if quick else FULL)[name])
    if holdout is not None:  # other held-out classes than the dataset's usual pair
        setting["holdout"] = tuple(holdout)
    if epochs is not None:  # a longer (or shorter) pre-training than the budget's
        options["epochs"] = int(epochs)
    if branch_options is not None:  # other towers than the budget's
        options["encoder"] = {**options["encoder"], "branch_options": branch_options}
    if rare_token_warmup is not None:  # handed to pretrain_encoder with the encoder options
        options["encoder"] = {**options["encoder"], "rare_token_warmup": float(rare_token_warmup)}
    started = time.time()
    spec = mmkeras.load_spec(name)
    mmkeras.prepare(spec)
    spec = spec.with_features([f.name for f in _features(spec, setting["modalities"])])
    train, train_labels = load_arrays(spec, "train")
    test, test_labels = load_arrays(spec, "test")
    validation, validation_labels = load_arrays(spec, "validation")
    runs = {}
    for variant in variants:
        for seed in seeds:
            print(f"[alignment] {name}: {variant}, seed {seed} ...", flush=True)
            encoder, pretraining = train_variant(spec, setting, options, variant, seed, verbose)
            run = {
                "pretraining": pretraining,
                "retrieval": {scoring: retrieval_figures(encoder, spec, setting["retrieval_levels"],
                                                         setting["holdout"], scoring)
                              for scoring in SCORINGS},
                "zero_shot": zero_shot_figures(encoder, spec, setting, train, train_labels,
                                               (test, test_labels), (validation, validation_labels), seed),
            }
            heads = bool(VARIANTS[variant]["classification_weight"])
            if heads:
                run["heads"] = head_figures(encoder, spec, setting["holdout"])
                run["retrieval"][CLASS_SPACE] = retrieval_figures(encoder, spec, setting["retrieval_levels"],
                                                                  setting["holdout"], space="classes")
            for scoring, (space, nearest_first) in DIVERSE.items():
                if space == "embedding" or heads:
                    run["retrieval"][scoring] = retrieval_figures(
                        encoder, spec, setting["retrieval_levels"], setting["holdout"], space=space,
                        diversity=DIVERSITY, nearest_first=nearest_first)
            if finetune:
                run["finetuning"] = finetune_figures(encoder, spec, options, train, train_labels, test, test_labels,
                                                     seed)
            runs[f"{variant}/seed{seed}"] = run
            print(f"[alignment] {name}: {variant}, seed {seed} done ({pretraining['seconds']} s of training)",
                  flush=True)
    figures = {
        "dataset": name,
        "modalities": [f.name for f in spec.features],
        "settings": {"quick": quick, "seeds": list(seeds), "variants": {v: VARIANTS[v] for v in variants},
                     "scorings": list(SCORINGS), "diversity": DIVERSITY,
                     "diversified": {name: list(value) for name, value in DIVERSE.items()}, "hubness_k": HUBNESS_K,
                     **_jsonable(options),
                     "loss": "ContrastiveLoss", "holdout": list(setting["holdout"])},
        "runs": runs,
        "summary": summarize_runs(runs, variants, seeds),
    }
    figures["seconds"] = round(time.time() - started, 1)
    figures["machine"] = f"{platform.machine()}, {_cpu_count()} CPU cores, keras {keras.__version__}"
    return figures


def summarize_runs(runs: dict, variants, seeds) -> dict:
    """Mean and std over seeds of every number of the runs, per variant (same nesting as one run)."""
    summary = {}
    for variant in variants:
        per_seed = [runs[f"{variant}/seed{seed}"] for seed in seeds]
        summary[variant] = _mean_std(per_seed)
    return summary


def _mean_std(values: list):
    first = values[0]
    if isinstance(first, dict):
        return {key: _mean_std([v[key] for v in values]) for key in first if all(key in v for v in values)}
    if isinstance(first, (int, float)) and not isinstance(first, bool) and first is not None:
        array = np.array(values, dtype=float)
        return {"mean": float(np.nanmean(array)), "std": float(np.nanstd(array))}
    return first


def run(
    datasets=("avmnist", "tuxpaint"),
    *,
    quick: bool = False,
    seeds=(0, 1),
    variants=DEFAULT_VARIANTS,
    finetune: bool = False,
    output_dir: str | Path | None = None,
    command: str | None = None,
    verbose: int = 0,
    epochs: int | None = None,
    holdout: tuple[str, ...] | None = None,
    branch_options: dict | None = None,
    rare_token_warmup: float | None = None,
    suffix: str = "",
) -> dict:
    """Run the benchmark on each dataset, save `alignment_<dataset><suffix>.{json,md}`; return the figures by dataset.

    Args:
      datasets: dataset names among `SETTINGS`.
      quick: the small, fast settings (`QUICK`) instead of `FULL`.
      seeds: the seeds of weights, shuffles and prompt draws; each variant is trained once per seed.
      variants: names among `VARIANTS`.
      finetune: also fine-tune a classifier on 10% of the labels from scratch and from the towers.
      output_dir: where to save (default `benchmarks/results`).
      command: the command line recorded with the figures.
      verbose: Keras verbosity while pre-training.
      epochs: pre-training epochs instead of the budget's (None: the budget's).
      holdout: the classes held out of pre-training instead of the dataset's usual ones (one dataset only);
        the files are then named `alignment_<dataset>_holdout_<classes>`.
      branch_options: the towers' branch options by modality instead of the budget's (`{}`: the
        classifier's default branches).
      rare_token_warmup: `pretrain_encoder`'s ramp of the text towers' rare-word dropout (None: its default).
      suffix: added to the files' names.

    Returns:
      Dataset name -> figures (as saved in the JSON file).
    """
    output_dir = Path(output_dir) if output_dir else RESULTS_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    if holdout is not None and len(datasets) != 1:
        raise ValueError(f"Held-out classes {list(holdout)} belong to one dataset; got datasets {list(datasets)}.")
    results = {}
    for name in datasets:
        figures = run_dataset(name, quick=quick, seeds=seeds, variants=variants, finetune=finetune, verbose=verbose,
                              epochs=epochs, holdout=holdout, branch_options=branch_options,
                              rare_token_warmup=rare_token_warmup)
        default_command = f"python benchmarks/alignment.py --datasets {name}" + (" --quick" if quick else "")
        figures["command"] = command or default_command
        stem = f"alignment_{name}" + (f"_holdout_{'_'.join(holdout)}" if holdout is not None else "") + suffix
        (output_dir / f"{stem}.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
        (output_dir / f"{stem}.md").write_text(format_markdown(figures), encoding="utf-8")
        print(format_markdown(figures), flush=True)
        results[name] = figures
    return results


def _pm(entry, digits=3) -> str:
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}" if isinstance(entry, dict) else "n/a"


def format_markdown(figures: dict) -> str:
    """The figures of one dataset as a Markdown report (means ± std over the seeds)."""
    name = figures["dataset"]
    first, second = figures["modalities"]
    settings = figures["settings"]
    summary = figures["summary"]
    lines = [
        f"# Cross-modal alignment: {name} ({first} <-> {second})",
        "",
        f"Command: `{figures['command']}` ({figures['seconds']} s; {figures['machine']}).",
        "",
        (
            f"Contrastive dual encoders (symmetric InfoNCE, learned temperature) aligned `{first}` and `{second}` for "
            f"{settings['epochs']} epochs on the train split without the held-out classes {settings['holdout']}, "
            f"once per seed {settings['seeds']}; every figure is the mean ± std over the seeds. Variants: "
            "`pairs` (instance pairing: only the row's own partner is a positive), `labels` (label-aware: every "
            "same-class row of the batch is a positive), `labels_joint` (label-aware plus a classification head "
            "on each tower, crossentropy weight 1), `labels_shared_head` (label-aware plus ONE classification head "
            "shared by the towers, weight 1), `labels_partner` (label-aware with half of the target on the row's own "
            "partner: `ContrastiveLoss(positives='labels', partner_share=0.5)`), `labels_partner_shared_head` (the "
            "same with the shared head). Scorings: `cosine`; `csls` and `inverted_softmax`, the "
            "hub-reducing re-scorings of retrieval (no retraining); `centred`: the cosine after each modality's "
            "mean embedding is subtracted (from the test queries and the test gallery); `class_space` (variants with heads): the dot "
            "product of the heads' class probabilities, the chance that two items share a class (`mmkeras.alignment.class_space`); "
            f"`cosine_mmr`: the cosines, each list ordered by maximal marginal relevance "
            f"(diversity {settings.get('diversity', DIVERSITY)}, `mmkeras.alignment.diversity`): an item much like "
            "one already listed waits behind items of other regions of the space; `cosine_mmr_after_5` and "
            "`class_space_mmr_after_5`: the five nearest items first, as the plain ranking lists them, then MMR."
        ),
        "",
        "## Training",
        "",
        "| variant | first loss | final loss | temperature | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for variant, values in summary.items():
        pre = values["pretraining"]
        lines.append(f"| {variant} | {_pm(pre['first_loss'])} | {_pm(pre['final_loss'])} "
                     f"| {_pm(pre['temperature'])} | {_pm(pre['seconds'], 0)} |")
    lines += [
        "",
        "## Retrieval on the test split",
        "",
        (
            "Instance level: the match of a query is the same example's other modality. Class level: any item of "
            f"the query's class matches. Hubness of the top-{settings['hubness_k']} lists: skewness of the "
            "k-occurrence N_k (0: even; > 1: strong hubs) and the share of queries whose list holds one of the 1% "
            "most retrieved gallery items ('hub q.'). P@5, P@10 (class level): the share of the first five / ten "
            "items of the query's class. Chance: the expectation for a random ranking."
        ),
        "",
        ("| examples | level | direction | variant | scoring | R@1 | R@5 | R@10 | P@5 | P@10 | mean rank "
        "| median rank | N_k skew | hub q. |"),
        "| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    any_variant = next(iter(summary.values()))
    for group, result in any_variant["retrieval"]["cosine"].items():
        subset, level = group.split("/")
        examples = f"{subset} ({result['num_examples']['mean']:.0f})"
        directions = [d for d in result if d not in ("chance", "num_examples")]
        for direction in directions:
            for variant, values in summary.items():
                for scoring in _scorings(settings, values):
                    entry = values["retrieval"][scoring][group][direction]
                    hub = entry["hubness"]
                    lines.append(
                        f"| {examples} | {level} | {direction.replace('_to_', ' -> ')} | {variant} | {scoring} "
                        f"| {_pm(entry['recall@1'])} | {_pm(entry['recall@5'])} | {_pm(entry['recall@10'])} "
                        f"| {_precision(entry, 5)} | {_precision(entry, 10)} | {entry['mean_rank']['mean']:.1f} "
                        f"| {entry['median_rank']['mean']:.1f} "
                        f"| {hub['skewness']['mean']:.2f} "
                        f"| {hub['queries_with_hub']['mean']:.2f} |"
                    )
        chance = result["chance"]
        lines.append(f"| {examples} | {level} | | *chance* | | {chance['recall@1']['mean']:.3f} "
                     f"| {chance['recall@5']['mean']:.3f} | {chance['recall@10']['mean']:.3f} "
                     f"| {_precision(chance, 5)} | {_precision(chance, 10)} "
                     f"| {chance['mean_rank']['mean']:.1f} | {chance['median_rank']['mean']:.1f} | | |")
    lines += ["", "## Targets of issue 17 (cosine scoring unless said)", "", *target_lines(figures), ""]
    lines += [
        f"## Zero-shot on held-out classes {settings['holdout']}",
        "",
        _ZERO_SHOT_MEANING.get(name, ""),
        "",
        (
            "Generalised zero-shot: all ten prototypes compete. 'calibrated' subtracts from the seen classes' "
            "scores the largest penalty that costs validation images of seen classes at most 5 points of accuracy "
            "(`calibrate_zero_shot`; no unseen example is used). 'unknown': with the eight seen prototypes only, "
            "a threshold accepting 95% of seen validation images; the share of test images called unknown."
        ),
        "",
        ("| variant | prompts per class | unseen among unseen | unseen among all | seen among all "
        "| calibrated unseen among all | calibrated seen among all | unseen called unknown "
        "| seen called unknown |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for variant, values in summary.items():
        for prompts, entry in values["zero_shot"]["prompts"].items():
            lines.append(
                f"| {variant} | {prompts.split('_')[0]} | " + " | ".join(
                    _pm(entry[key]) for key in ("unseen_among_unseen", "unseen_among_all", "seen_among_all",
                                                "calibrated_unseen_among_all", "calibrated_seen_among_all",
                                                "unseen_called_unknown", "seen_called_unknown")
                ) + " |"
            )
        names = values["zero_shot"].get("class_names")
        if names:
            lines.append(f"| {variant} | class names | {_pm(names['unseen_among_unseen'])} "
                         f"| {_pm(names['unseen_among_all'])} | | | | | |")
    chance = next(iter(summary.values()))["zero_shot"]["chance"]
    lines.append(f"| *chance* | | {chance['unseen_among_unseen']['mean']:.3f} "
                 f"| {chance['unseen_among_all']['mean']:.3f} | {chance['seen_among_all']['mean']:.3f} | | | | |")
    heads = {variant: values["heads"] for variant, values in summary.items() if "heads" in values}
    if heads:
        lines += ["", "## Joint objective: the towers' classification heads (test accuracy)", "",
                  "| variant | head | all test | seen classes |", "| --- | --- | ---: | ---: |"]
        for variant, entry in heads.items():
            for head, values in entry.items():
                lines.append(f"| {variant} | {head} | {_pm(values['all_test'])} | {_pm(values['seen_classes'])} |")
        lines.append("")
        lines.append("A head never saw the held-out classes, so it cannot name them: 'all test' is at most the seen "
                     "classes' share of the test split.")
    tune = [(variant, values["finetuning"]) for variant, values in summary.items() if "finetuning" in values]
    if tune:
        lines += ["", f"## Fine-tuning with {LABEL_FRACTION:.0%} of the train labels", "",
                  "| variant | scratch accuracy | aligned towers accuracy | gain |", "| --- | ---: | ---: | ---: |"]
        for variant, entry in tune:
            lines.append(f"| {variant} | {_pm(entry['scratch']['test_accuracy'])} "
                         f"| {_pm(entry['aligned_towers']['test_accuracy'])} | {_pm(entry['gain']['test_accuracy'])} |")
    lines += ["", "## Caveats", "", _CAVEATS.get(name, "").format(holdout=tuple(settings["holdout"])), "",
              _REPRODUCIBILITY]
    return "\n".join(lines) + "\n"


def target_lines(figures: dict) -> list[str]:
    """One line per variant and scoring: how many (group, direction) cases meet each retrieval target of issue 17."""
    checks = {
        "R@1 >= 3x chance": lambda entry, chance: entry["recall@1"]["mean"] >= 3 * chance["recall@1"]["mean"],
        "R@5 > chance": lambda entry, chance: entry["recall@5"]["mean"] > chance["recall@5"]["mean"],
        "R@10 > chance": lambda entry, chance: entry["recall@10"]["mean"] > chance["recall@10"]["mean"],
        "mean rank < chance": lambda entry, chance: entry["mean_rank"]["mean"] < chance["mean_rank"]["mean"],
    }
    lines = []
    for variant, values in figures["summary"].items():
        for scoring in _scorings(figures["settings"], values):
            cases = [(entry, result["chance"]) for result in values["retrieval"][scoring].values()
                     for direction, entry in result.items() if direction not in ("chance", "num_examples")]
            counts = ", ".join(f"{name} {sum(check(e, c) for e, c in cases)}/{len(cases)}"
                               for name, check in checks.items())
            lines.append(f"- {variant}, {scoring}: {counts} (group x direction cases met)")
        if figures["dataset"] == "avmnist":
            r1 = values["retrieval"]["cosine"]["all_test/class"]
            worse = min(r1[d]["recall@1"]["mean"] for d in r1 if d not in ("chance", "num_examples"))
            zero = values["zero_shot"]["prompts"]["5_per_class"]["unseen_among_unseen"]["mean"]
            lines.append(f"- {variant}: avmnist class-level R@1 >= 0.5 both ways (all test, cosine): "
                         f"{'met' if worse >= 0.5 else 'not met'} (worse direction {worse:.3f}); zero-shot unseen "
                         f"among unseen (5 exemplars) >= 0.65: {'met' if zero >= 0.65 else 'not met'} ({zero:.3f})")
            for scoring, where in (("centred", "by centred cosine"), (CLASS_SPACE, "in the heads' label space")):
                if scoring not in values["retrieval"]:
                    continue
                r1 = values["retrieval"][scoring]["all_test/class"]
                worse = min(r1[d]["recall@1"]["mean"] for d in r1 if d not in ("chance", "num_examples"))
                lines.append(f"- {variant}: the same R@1 target {where} ({scoring}): "
                             f"{'met' if worse >= 0.5 else 'not met'} (worse direction {worse:.3f})")
    return lines


def _scorings(settings: dict, values: dict) -> list[str]:
    """The scorings a variant was measured with: every one of the run's, the label space if it has heads, and the
    diversified orderings (in files made since they exist)."""
    extra = (CLASS_SPACE, *DIVERSE)
    return [*settings["scorings"], *(name for name in extra if name in values["retrieval"])]


def _precision(entry: dict, k: int) -> str:
    """Precision@k of a class-level entry, mean over the seeds ('' where it was not measured)."""
    value = entry.get(f"precision@{k}")
    return f"{value['mean']:.3f}" if isinstance(value, dict) else ""


_REPRODUCIBILITY = (
    "A seeded run is reproducible on one machine: pre-training decodes its split in order under a seed, so the same "
    "command gives the same figures (checked: the variants' rows repeat exactly between processes). Read differences "
    "against the seed spread (the ± columns). Files made before 2026-12-04's seventh session were not reproducible: "
    "there, runs of the same command moved retrieval R@1 by up to about 0.1."
)
_ZERO_SHOT_MEANING = {
    "avmnist": (
        "What zero-shot means here: no image and no recording of the held-out digits was used to train the encoder. "
        "A held-out digit is then *named* in the other modality, as CLIP names a class with a text prompt: by K "
        "spoken recordings of it from the train split (a spoken digit is the digit's name), whose audio-tower "
        "embeddings are averaged into a prototype; each image is given the class of the most similar prototype. "
        "'Unseen among unseen' chooses between the held-out digits only (chance 1/2); 'unseen among all' among "
        "all ten prototypes, seen digits included (chance 1/10, and the seen classes, which the space was trained "
        "on, attract unseen images). 'Seen among all' is the same classifier on test images of the trained digits. "
        "Recordings are by training speakers; images come from the test split (and the validation split)."
    ),
    "tuxpaint": (
        "What zero-shot means here: no picture and no description of the held-out categories was used to train "
        "the encoder, and their words are not in its vocabulary unless other categories use them. A held-out "
        "category is named by K descriptions of its train-split stamps (text-tower embeddings averaged into a "
        "prototype), or by its name in French; each picture gets the most similar prototype's category. The text "
        "tower was trained from scratch on ~400 French descriptions, so it knows no word it did not see: category "
        "names such as 'nourriture' or 'véhicules' never occur in the descriptions and map to the out-of-vocabulary "
        "token, which makes name prompts carry no information (listed below); that row is reported for "
        "completeness. Chance is 1/2 among the held-out categories and 1/10 among all (the categories are "
        "imbalanced, so a majority guess can beat 1/10)."
    ),
}
_CAVEATS = {
    "avmnist": (
        "AV-MNIST pairs each image with a random recording of the same digit, so the pairing itself is label "
        "information, and the label-aware variants use the labels explicitly: none of this is unsupervised "
        "pre-training. The encoder never saw digits "
        "{holdout}; 'all_test' includes them, so a space that only knows the eight seen "
        "digits loses those queries. Mean ranks stay above chance even where R@1 is several times chance: a query "
        "placed in the wrong digit's cluster ranks behind that whole cluster (about 170 items), so the mean is "
        "dominated by the misplaced share: compare the median rank column. The MMR rows list other clusters early "
        "instead, which brings the mean rank down at a cost in precision (P@10). Hubness "
        "(skewed N_k: a few items in most lists) is measured, not assumed; CSLS and the inverted softmax re-rank "
        "without retraining. The figures are reported as measured."
    ),
    "tuxpaint": (
        "The splits are small (111 test stamps; the held-out categories have about 15 test and validation "
        "pictures), so zero-shot figures move by several points between seeds. Pairs (picture, description) are "
        "natural, so pre-training uses no labels; the encoder never saw the held-out categories, while the "
        "classifier is evaluated on all ten."
    ),
}


def _features(spec, modalities):
    from mmkeras.alignment.dual_encoder import resolve_features

    return resolve_features(spec, modalities)


def _concat(first, second):
    return np.concatenate([first, second])


def _jsonable(value):
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["avmnist", "tuxpaint"], choices=sorted(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="small models and short schedules (minutes on 2 cores)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--finetune", action="store_true",
                        help="also fine-tune a classifier on 10%% of the labels, from scratch and from the towers")
    parser.add_argument("--output-dir", default=None, help="where to save the figures (default: benchmarks/results)")
    parser.add_argument("--verbose", type=int, default=0, help="Keras verbosity while pre-training")
    parser.add_argument("--epochs", type=int, default=None, help="pre-training epochs (default: the budget's)")
    parser.add_argument("--holdout", nargs="+", default=None,
                        help="classes to hold out of pre-training instead of the dataset's usual ones (one dataset)")
    parser.add_argument("--branch-options", type=json.loads, default=None,
                        help="the towers' branch options by modality, as JSON, instead of the budget's "
                             "('{}': the classifier's default branches)")
    parser.add_argument("--rare-token-warmup", type=float, default=None,
                        help="the share of the epochs over which the text towers' rare-word dropout ramps in "
                             "(default: pretrain_encoder's)")
    parser.add_argument("--suffix", default="", help="added to the results' file names")
    args = parser.parse_args(argv)
    arguments = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/alignment.py " + " ".join(shlex.quote(a) for a in arguments)
    run(args.datasets, quick=args.quick, seeds=tuple(args.seeds), variants=tuple(args.variants),
        finetune=args.finetune, output_dir=args.output_dir, command=command.strip(), verbose=args.verbose,
        epochs=args.epochs, holdout=tuple(args.holdout) if args.holdout else None,
        branch_options=args.branch_options, rare_token_warmup=args.rare_token_warmup, suffix=args.suffix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
