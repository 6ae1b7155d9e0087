"""The paper's datasets as sources: raw files -> shard samples (write time) -> sequences (load time).

One module per dataset family; each provides the same two halves (see `base.py`):

* write time: `read_split(root, split, ...) -> SourceSplit`, the split's samples encoded as
  webdataset fields (`{"image.png": bytes, "label.cls": bytes, ...}`) plus the manifest's
  `dataset_info`, read from the dataset's published on-disk format;
* load time: a picklable `Composer` whose `decode` turns one shard sample back into a record and
  whose `compose` turns a list of records into a batch of sequences with their actions, following
  the sampling and action definitions of the paper notes for that dataset
  (docs/paper-and-original-code.md#data, #actions-per-dataset); its module's `build_composer(manifest, options)` sets
  one up from the dataset's load-time options.

Each dataset is one entry of the registry (`data_pipeline/datasets.py`), which names these modules.
"""
