"""``vista-data convert``: CSV / TSV / JSONL / Parquet / Hugging Face ``save_to_disk`` data
into a FedNLP data file (layout: ``shared/design/FEDNLP_FORMAT.md``).

One job per module (imports run one way: ``cli`` -> ``splitting`` -> ``readers``):

* :mod:`~vista.data.convert.readers`: reading the inputs (CSV/TSV, JSONL/JSON, Parquet,
  Arrow, Hugging Face ``datasets`` directories) into a :class:`Table` (``read_table``),
  with the label/text normalisation and split-column values used while reading;
* :mod:`~vista.data.convert.splitting`: the train/test split, the label vocabulary and
  writing the data file (``convert``, ``ConvertResult``, the ``X_b`` pair-text group);
* :mod:`~vista.data.convert.cli`: the ``convert`` subcommand of ``vista-data``
  (``register``).

Every name the single ``convert`` module had is re-exported here, so
``from vista.data.convert import ...`` keeps working.
"""

from __future__ import annotations

# only ``__all__`` is the public API; the helpers and constants are re-exported too so that
# every name of the former single ``convert`` module still resolves here
from vista.data.convert.cli import _run, register  # noqa: F401
from vista.data.convert.readers import (  # noqa: F401
    _DICT_TEST_SPLITS,
    _SPLIT_ALIASES,
    FILE_READERS,
    TEST,
    TRAIN,
    Record,
    Table,
    _arrow_records,
    _check_columns,
    _class_label_names,
    _hf_features_from_schema,
    _is_dataset_dir,
    _label,
    _load_saved_dataset,
    _present,
    _pyarrow,
    _raise_csv_field_limit,
    _read_arrow,
    _read_arrow_stream_files,
    _read_csv,
    _read_directory,
    _read_jsonl,
    _read_parquet,
    _text,
    read_table,
)
from vista.data.convert.splitting import (  # noqa: F401
    ConvertResult,
    _add_text_b,
    _random_split,
    _sorted_labels,
    convert,
)

__all__ = ["ConvertResult", "Table", "convert", "read_table", "register"]
