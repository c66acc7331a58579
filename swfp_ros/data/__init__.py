"""Demonstration datasets and rosbag2 recording / ingestion: the rosbags library, no ROS runtime.

    dataset     DemoDataset / Episode: the versioned .npz demonstration format (BC, replay seeding)
    bag_writer  write_demo_bag (expert episodes -> rosbag2), BagRecorder (streaming raw-CDR writer for a recorder node)
    spec        IngestSpec: declarative YAML mapping from topics / fields to observation and action vectors
    reader      open_bag: bag directory or single .mcap/.db3, v4-v9, metadata fallback, embedded type definitions
    unfinished  recordings whose recorder was killed: MCAP without a footer, sqlite3 beside its log or journal
    ingest      ingest(bags, spec) -> DemoDataset (streaming, as-of alignment, per-bag error report)
    inspect     inspect_bag / format_summary: `swfp inspect BAG`
"""
from .bag_writer import BagRecorder, BagWriteError, EpisodeRecord, write_demo_bag
from .dataset import FORMAT_VERSION, DatasetError, DemoDataset, Episode
from .ingest import IngestError, IngestReport, ingest, ingest_bag
from .inspect import BagSummary, format_summary, inspect_bag
from .reader import BagError, BagReadError, BagWarning, open_bag
from .spec import IngestSpec, SpecError, default_panda_spec, default_panda_spec_dict, load_spec

__all__ = ['BagRecorder', 'BagWriteError', 'EpisodeRecord', 'write_demo_bag', 'FORMAT_VERSION', 'DatasetError',
           'DemoDataset', 'Episode', 'IngestError', 'IngestReport', 'ingest', 'ingest_bag', 'BagSummary',
           'format_summary', 'inspect_bag', 'BagError', 'BagReadError', 'BagWarning', 'open_bag',
           'IngestSpec', 'SpecError', 'default_panda_spec', 'default_panda_spec_dict', 'load_spec']
