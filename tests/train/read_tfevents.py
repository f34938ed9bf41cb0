#!/usr/bin/env python3
"""Reads a TensorBoard event file back with PyPI's `tensorboard` package and prints what it holds,
one fact per line, for tests/train/test_loggers.cpp to compare with what Kiln's logger wrote:

  records <n>                                   every record, both CRCs checked (a bad one raises)
  scalar <tag> <step> <value> <wall_time>       from tensorboard's EventAccumulator
  hparam <name> number|string|bool <value>      the hparams plugin's session_start_info
  metric_info <tag>                             the hparams plugin's experiment
  session_end <status>                          e.g. STATUS_SUCCESS

Usage: read_tfevents.py EVENT_FILE
"""
import sys

from tensorboard.backend.event_processing import event_accumulator
from tensorboard.compat.tensorflow_stub import errors, pywrap_tensorflow
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2


def count_records(path):
    # The accumulator stops quietly at a damaged record; this reader raises DataLossError instead.
    reader = pywrap_tensorflow.PyRecordReader_New(path.encode(), 0, b"", None)
    n = 0
    while True:
        try:
            reader.GetNext()
        except errors.OutOfRangeError:
            return n
        n += 1


def main(path):
    print("records", count_records(path))
    acc = event_accumulator.EventAccumulator(path, size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    for tag in sorted(acc.Tags()["scalars"]):
        for e in acc.Scalars(tag):
            print("scalar", tag, e.step, repr(e.value), repr(e.wall_time))
    for tag, content in sorted(acc.PluginTagToContent("hparams").items()):
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        kind = data.WhichOneof("data")
        if kind == "session_start_info":
            for name, value in sorted(data.session_start_info.hparams.items()):
                which = value.WhichOneof("kind")
                if which == "number_value":
                    print("hparam", name, "number", repr(value.number_value))
                elif which == "string_value":
                    print("hparam", name, "string", value.string_value)
                elif which == "bool_value":
                    print("hparam", name, "bool", value.bool_value)
        elif kind == "experiment":
            for info in data.experiment.metric_infos:
                print("metric_info", info.name.tag)
        elif kind == "session_end_info":
            print("session_end", api_pb2.Status.Name(data.session_end_info.status))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
