// TensorBoard event files written by hand: CRC-32C (Castagnoli) and its TFRecord mask, the TFRecord
// framing, a minimal protobuf encoder, and the few messages a scalar/hparams logger needs
// (tensorboard.Event, Summary, and the hparams plugin's HParamsPluginData). Field numbers follow
// tensorboard/compat/proto/{event,summary}.proto and plugins/hparams/{api,plugin_data}.proto.
// This is not a general protobuf library: it writes only, and only these messages.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::tfevents {

// Seconds since the Unix epoch, as Event.wall_time holds them.
double wall_time_now();

// CRC-32C (polynomial 0x1EDC6F41, reflected), as TFRecord uses; crc32c("123456789") == 0xE3069283.
uint32_t crc32c(std::string_view data);
// TFRecord stores CRCs rotated and offset so that a CRC over data that embeds CRCs stays strong.
uint32_t masked_crc32c(std::string_view data);

// One TFRecord: u64 length (little-endian), masked crc of those 8 bytes, the payload, masked crc
// of the payload.
std::string frame_record(std::string_view payload);

// Appends protobuf wire-format fields to a byte string (proto3: callers skip default values).
class ProtoWriter {
 public:
  void varint_field(int field, uint64_t value);
  void double_field(int field, double value);
  void float_field(int field, float value);
  void bytes_field(int field, std::string_view bytes);  // strings, bytes and nested messages
  const std::string& bytes() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void tag(int field, int wire_type);
  void varint(uint64_t value);
  std::string out_;
};

// The value of one hyperparameter, as google.protobuf.Value holds it.
struct HParamValue {
  enum class Kind { number, string, boolean } kind = Kind::number;
  double number = 0;
  std::string text;
  bool flag = false;
};

// hparams plugin session status (tensorboard.hparams.Status).
enum class SessionStatus : int { unknown = 0, success = 1, failure = 2, running = 3 };

// Serialized tensorboard.Event messages (without framing).
std::string file_version_event(double wall_time);  // "brain.Event:2", the first record of a file
std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
// The three hparams plugin summaries, tagged "_hparams_/experiment", "_hparams_/session_start_info"
// and "_hparams_/session_end_info", as torch's SummaryWriter.add_hparams writes them.
std::string hparams_experiment_event(double wall_time, const std::vector<std::pair<std::string, HParamValue>>& hparams,
                                     const std::vector<std::string>& metric_tags);
std::string hparams_session_start_event(double wall_time, const std::vector<std::pair<std::string, HParamValue>>& hparams);
std::string hparams_session_end_event(double wall_time, SessionStatus status);

// An events.out.tfevents.* file. Records are buffered in memory and appended to the file on
// flush(); the file is created (empty, then with the file_version record) by the constructor.
// Every failing call throws kiln::Error naming the path.
class EventFileWriter {
 public:
  explicit EventFileWriter(std::string path, size_t flush_threshold_bytes = 1 << 20);
  ~EventFileWriter();  // flushes; never throws (a failure is reported on stderr)
  EventFileWriter(const EventFileWriter&) = delete;
  EventFileWriter& operator=(const EventFileWriter&) = delete;

  void add_event(std::string_view serialized_event);  // flushes when the buffer passes the threshold
  void flush();
  void close();  // flushes and closes; later adds are an error
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
  std::string buffer_;
  size_t flush_threshold_;
};

}  // namespace kiln::tfevents
