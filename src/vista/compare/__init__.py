"""``vista compare``: compare the runs of a sweep (see :mod:`vista.compare.cli` for the command).

* :mod:`~vista.compare.load`: finding and loading runs (run directories, sweep groups, W&B);
* :mod:`~vista.compare.group`: configurations, their labels, mean +/- std over seeds;
* :mod:`~vista.compare.render`: the table (text, Markdown, CSV) and the plots;
* :mod:`~vista.compare.cli`: the command line (``main``).
"""

from vista.compare.cli import main
from vista.compare.group import (
    COMPARE_IGNORED_KEYS,
    DEFAULT_METRICS,
    ConfigResult,
    by_keys,
    common_items,
    compare,
    config_items,
    group_option,
    ignored_keys,
    item,
    mean_std,
    options_by_target,
    pick_metrics,
    run_values,
    varying_keys,
)
from vista.compare.load import (
    RUN_FILES,
    Run,
    find_group,
    find_run_dirs,
    flatten,
    load_run,
    load_wandb_group,
)
from vista.compare.render import (
    curves_figure,
    final_figure,
    markdown,
    plain,
    plot,
    table_rows,
    write_csv,
)

__all__ = [
    "COMPARE_IGNORED_KEYS", "DEFAULT_METRICS", "RUN_FILES", "ConfigResult", "Run", "by_keys", "common_items",
    "compare", "config_items", "curves_figure", "final_figure", "find_group", "find_run_dirs", "flatten",
    "group_option", "ignored_keys", "item", "load_run", "load_wandb_group", "main", "markdown", "mean_std",
    "options_by_target", "pick_metrics", "plain", "plot", "run_values", "table_rows", "varying_keys",
    "write_csv",
]
