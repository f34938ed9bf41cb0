// TFRecord framing, CRC-32C and the hand-written protobuf encoding of TensorBoard events.
// See event_file.h for the message layouts; field numbers are noted at each use.
#include "train/loggers/event_file.h"

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "tensor/error.h"

namespace kiln::tfevents {
namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1u) ? 0x82F63B78u : 0u);  // reflected Castagnoli
    table[i] = crc;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// Protobuf wire types.
constexpr int kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5;

using HParams = std::vector<std::pair<std::string, HParamValue>>;

std::string event_header(double wall_time, int64_t step) {
  ProtoWriter event;
  event.double_field(1, wall_time);                                // Event.wall_time
  if (step != 0) event.varint_field(2, static_cast<uint64_t>(step));  // Event.step (int64: two's complement)
  return event.take();
}

// A Summary holding one value that carries only hparams plugin metadata (no data of its own).
std::string hparams_summary(std::string_view tag, const std::string& plugin_content) {
  ProtoWriter plugin_data;
  plugin_data.bytes_field(1, "hparams");       // PluginData.plugin_name
  plugin_data.bytes_field(2, plugin_content);  // PluginData.content: a serialized HParamsPluginData
  ProtoWriter metadata;
  metadata.bytes_field(1, plugin_data.bytes());  // SummaryMetadata.plugin_data
  ProtoWriter value;
  value.bytes_field(1, tag);                // Summary.Value.tag
  value.bytes_field(9, metadata.bytes());   // Summary.Value.metadata
  ProtoWriter summary;
  summary.bytes_field(1, value.bytes());    // Summary.value
  return summary.take();
}

std::string event_with_summary(double wall_time, int64_t step, const std::string& summary) {
  std::string event = event_header(wall_time, step);
  ProtoWriter rest;
  rest.bytes_field(5, summary);  // Event.summary
  return event + rest.bytes();
}

// HParamsPluginData with its `data` oneof set to field `which` (2 experiment, 3 session start,
// 4 session end). version = 0 is the default and so is not written.
std::string plugin_data(int which, const std::string& message) {
  ProtoWriter data;
  data.bytes_field(which, message);
  return data.take();
}

// google.protobuf.Value: number_value = 2, string_value = 3, bool_value = 4 (a oneof, so written
// even when it holds the default).
std::string protobuf_value(const HParamValue& v) {
  ProtoWriter value;
  switch (v.kind) {
    case HParamValue::Kind::number: value.double_field(2, v.number); break;
    case HParamValue::Kind::string: value.bytes_field(3, v.text); break;
    case HParamValue::Kind::boolean: value.varint_field(4, v.flag ? 1 : 0); break;
  }
  return value.take();
}

// tensorboard.hparams.DataType: STRING = 1, BOOL = 2, FLOAT64 = 3.
int hparam_data_type(HParamValue::Kind kind) {
  switch (kind) {
    case HParamValue::Kind::string: return 1;
    case HParamValue::Kind::boolean: return 2;
    case HParamValue::Kind::number: return 3;
  }
  return 0;
}

void put_u32_le(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void put_u64_le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

}  // namespace

double wall_time_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

uint32_t crc32c(std::string_view data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) crc = kCrc32cTable[(crc ^ byte) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(std::string_view data) {
  const uint32_t crc = crc32c(data);
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

std::string frame_record(std::string_view payload) {
  std::string record;
  record.reserve(payload.size() + 16);
  put_u64_le(record, payload.size());
  put_u32_le(record, masked_crc32c(record));
  record.append(payload);
  put_u32_le(record, masked_crc32c(payload));
  return record;
}

void ProtoWriter::tag(int field, int wire_type) { varint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type)); }

void ProtoWriter::varint(uint64_t value) {
  while (value >= 0x80) {
    out_.push_back(static_cast<char>((value & 0x7F) | 0x80));
    value >>= 7;
  }
  out_.push_back(static_cast<char>(value));
}

void ProtoWriter::varint_field(int field, uint64_t value) {
  tag(field, kVarint);
  varint(value);
}

void ProtoWriter::double_field(int field, double value) {
  tag(field, kFixed64);
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_u64_le(out_, bits);
}

void ProtoWriter::float_field(int field, float value) {
  tag(field, kFixed32);
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_u32_le(out_, bits);
}

void ProtoWriter::bytes_field(int field, std::string_view bytes) {
  tag(field, kLengthDelimited);
  varint(bytes.size());
  out_.append(bytes);
}

std::string file_version_event(double wall_time) {
  ProtoWriter event;
  event.double_field(1, wall_time);
  event.bytes_field(3, "brain.Event:2");  // Event.file_version
  return event.take();
}

std::string scalars_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars) {
  ProtoWriter summary;
  for (const auto& [tag, value] : scalars) {
    ProtoWriter v;
    v.bytes_field(1, tag);    // Summary.Value.tag
    v.float_field(2, value);  // Summary.Value.simple_value (a oneof member: written even when 0)
    summary.bytes_field(1, v.bytes());
  }
  return event_with_summary(wall_time, step, summary.bytes());
}

std::string hparams_experiment_event(double wall_time, const HParams& hparams, const std::vector<std::string>& metric_tags) {
  ProtoWriter experiment;
  for (const auto& [name, value] : hparams) {
    ProtoWriter info;
    info.bytes_field(1, name);                                // HParamInfo.name
    info.varint_field(4, hparam_data_type(value.kind));      // HParamInfo.type
    experiment.bytes_field(4, info.bytes());                  // Experiment.hparam_infos
  }
  for (const std::string& tag : metric_tags) {
    ProtoWriter metric_name;
    metric_name.bytes_field(2, tag);                          // MetricName.tag
    ProtoWriter info;
    info.bytes_field(1, metric_name.bytes());                 // MetricInfo.name
    experiment.bytes_field(5, info.bytes());                  // Experiment.metric_infos
  }
  experiment.double_field(3, wall_time);                      // Experiment.time_created_secs
  return event_with_summary(wall_time, 0, hparams_summary("_hparams_/experiment", plugin_data(2, experiment.bytes())));
}

std::string hparams_session_start_event(double wall_time, const HParams& hparams) {
  ProtoWriter start;
  for (const auto& [name, value] : hparams) {
    ProtoWriter entry;  // map<string, google.protobuf.Value> entries are messages {key = 1, value = 2}
    entry.bytes_field(1, name);
    entry.bytes_field(2, protobuf_value(value));
    start.bytes_field(1, entry.bytes());                      // SessionStartInfo.hparams
  }
  start.double_field(5, wall_time);                           // SessionStartInfo.start_time_secs
  return event_with_summary(wall_time, 0, hparams_summary("_hparams_/session_start_info", plugin_data(3, start.bytes())));
}

std::string hparams_session_end_event(double wall_time, SessionStatus status) {
  ProtoWriter end;
  end.varint_field(1, static_cast<uint64_t>(status));         // SessionEndInfo.status
  end.double_field(2, wall_time);                             // SessionEndInfo.end_time_secs
  return event_with_summary(wall_time, 0, hparams_summary("_hparams_/session_end_info", plugin_data(4, end.bytes())));
}

EventFileWriter::EventFileWriter(std::string path, size_t flush_threshold_bytes)
    : path_(std::move(path)), flush_threshold_(flush_threshold_bytes) {
  file_ = std::fopen(path_.c_str(), "wb");
  KILN_CHECK(file_ != nullptr, "TensorBoard event file: cannot create '", path_, "': ", std::strerror(errno));
  // Written at once, as TensorBoard's own writers do, so that a reader never meets a file that
  // exists but does not start with its version record.
  add_event(file_version_event(wall_time_now()));
  flush();
}

EventFileWriter::~EventFileWriter() {
  try {
    close();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kiln: %s\n", e.what());
  }
}

void EventFileWriter::add_event(std::string_view serialized_event) {
  KILN_CHECK(file_ != nullptr, "TensorBoard event file '", path_, "': write after close");
  buffer_ += frame_record(serialized_event);
  if (buffer_.size() >= flush_threshold_) flush();
}

void EventFileWriter::flush() {
  if (file_ == nullptr || buffer_.empty()) return;
  const std::string pending = std::move(buffer_);
  buffer_.clear();
  const size_t written = std::fwrite(pending.data(), 1, pending.size(), file_);
  KILN_CHECK(written == pending.size() && std::fflush(file_) == 0, "TensorBoard event file: cannot write '", path_,
             "': ", std::strerror(errno), " (", written, " of ", pending.size(), " bytes written)");
}

void EventFileWriter::close() {
  if (file_ == nullptr) return;
  flush();
  std::FILE* f = std::exchange(file_, nullptr);
  KILN_CHECK(std::fclose(f) == 0, "TensorBoard event file: cannot close '", path_, "': ", std::strerror(errno));
}

}  // namespace kiln::tfevents
