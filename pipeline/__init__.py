"""Step plumbing: the step table and CAM-source registry, presets, the per-image loop,
the classifier trainer, CAM-folder datasets, evaluation records, the report's rows and
the run record. Steps use it; it uses net/, voc12/ and misc/, never a step."""


def dataset(args):
    """The run's dataset reader (--dataset, --voc12_root), label cache under result/."""
    from voc12.datasets import open_dataset  # lazy: the orchestrator's --list_steps needs no torch
    return open_dataset(args.dataset, args.voc12_root, args.result_dir)
