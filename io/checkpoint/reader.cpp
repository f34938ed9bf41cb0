// The native checkpoint reader. Validation order follows the file: fixed header, JSON header
// (checksum, then syntax, then fields), tensor table, padding; tensor data when it is read.
#include "io/checkpoint/reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "io/checkpoint/checksum.h"
#include "io/checkpoint/format.h"
#include "io/checkpoint/validate.h"
#include "tensor/factories.h"

namespace kiln::io {
namespace {

using detail::shown;

std::string hex8(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

uint32_t parse_crc_field(const Json& v, const std::string& where) {
  const std::string s = detail::read_string(v, where);
  KILN_CHECK(s.size() == 8 && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
             }),
             where, ": expected 8 lowercase hex digits, got ", shown(s));
  return static_cast<uint32_t>(std::stoul(s, nullptr, 16));
}

// Bytes [from, to) of the file must be zero (alignment padding).
void check_zero_padding(const uint8_t* base, uint64_t from, uint64_t to, const std::string& where) {
  for (uint64_t i = from; i < to; ++i)
    KILN_CHECK(base[i] == 0, where, ": padding byte at file offset ", i, " is ", static_cast<int>(base[i]),
               ", must be 0");
}

}  // namespace

CheckpointReader::CheckpointReader(std::shared_ptr<const FileBytes> bytes) : bytes_(std::move(bytes)) { parse(); }

CheckpointReader CheckpointReader::open(const std::string& path) {
  return CheckpointReader(FileBytes::map(path, "load"));
}

CheckpointReader CheckpointReader::from_memory(const void* data, size_t size, std::string label) {
  return CheckpointReader(FileBytes::borrow(data, size, std::move(label)));
}

void CheckpointReader::parse() {
  namespace f = format;
  const std::string where = "checkpoint '" + bytes_->label() + "'";
  const uint8_t* p = bytes_->data();
  const uint64_t size = bytes_->size();

  KILN_CHECK(size >= f::kFixedHeaderBytes, where, ": file is ", size, " bytes, smaller than the ",
             f::kFixedHeaderBytes, "-byte fixed header (truncated, or not a Kiln checkpoint)");
  KILN_CHECK(std::memcmp(p, f::kMagic, sizeof f::kMagic) == 0, where, ": bad magic bytes ",
             shown(std::string_view(reinterpret_cast<const char*>(p), 8)), " at offset 0 (expected 'KILNCKPT'; not a Kiln checkpoint)");
  version_ = f::load_le<uint32_t>(p + f::kAtVersion);
  KILN_CHECK(version_ != 0, where, ": format version 0 (at byte ", f::kAtVersion, ") is invalid");
  KILN_CHECK(version_ <= f::kVersion, where, ": format version ", version_, " is newer than this Kiln reads (up to ",
             f::kVersion, "); upgrade Kiln to load it");
  const uint32_t flags = f::load_le<uint32_t>(p + f::kAtFlags);
  KILN_CHECK(flags == 0, where, ": fixed header field 'flags' (byte ", f::kAtFlags, ") is ", hex8(flags),
             "; version ", version_, " defines no flags");
  KILN_CHECK(f::load_le<uint32_t>(p + f::kAtReserved0) == 0 && f::load_le<uint64_t>(p + f::kAtReserved1) == 0 &&
                 f::load_le<uint64_t>(p + f::kAtReserved1 + 8) == 0,
             where, ": reserved bytes of the fixed header (28..31, 48..63) are not zero");

  const uint64_t header_bytes = f::load_le<uint64_t>(p + f::kAtHeaderBytes);
  KILN_CHECK(header_bytes > 0, where, ": fixed header field 'header_bytes' (byte ", f::kAtHeaderBytes, ") is 0");
  KILN_CHECK(header_bytes <= f::kMaxHeaderBytes, where, ": fixed header field 'header_bytes' (byte ",
             f::kAtHeaderBytes, ") is ", header_bytes, ", more than the limit of ", f::kMaxHeaderBytes);
  KILN_CHECK(header_bytes <= size - f::kFixedHeaderBytes, where, ": fixed header field 'header_bytes' (byte ",
             f::kAtHeaderBytes, ") is ", header_bytes, ", past the end of the ", size, "-byte file (truncated?)");
  data_offset_ = f::load_le<uint64_t>(p + f::kAtDataOffset);
  const uint64_t expected_offset = f::align_up(f::kFixedHeaderBytes + header_bytes);
  KILN_CHECK(data_offset_ == expected_offset, where, ": fixed header field 'data_offset' (byte ", f::kAtDataOffset,
             ") is ", data_offset_, ", expected ", expected_offset, " (64 + header_bytes, rounded up to 64)");
  data_bytes_ = f::load_le<uint64_t>(p + f::kAtDataBytes);
  KILN_CHECK(data_bytes_ <= UINT64_MAX - data_offset_ && data_offset_ + data_bytes_ <= size, where,
             ": file is truncated: the fixed header says the data ends at byte ",
             data_bytes_ <= UINT64_MAX - data_offset_ ? std::to_string(data_offset_ + data_bytes_) : "2^64+",
             " but the file has ", size, " bytes");
  KILN_CHECK(data_offset_ + data_bytes_ == size, where, ": ", size - data_offset_ - data_bytes_,
             " trailing bytes after the data section (which ends at byte ", data_offset_ + data_bytes_, ")");

  const char* json = reinterpret_cast<const char*>(p + f::kFixedHeaderBytes);
  header_crc_ = f::load_le<uint32_t>(p + f::kAtHeaderCrc);
  const uint32_t actual_crc = crc32c(json, header_bytes);
  KILN_CHECK(actual_crc == header_crc_, where, ": JSON header checksum mismatch (stored ", hex8(header_crc_),
             ", computed ", hex8(actual_crc), "): the header is corrupt");
  check_zero_padding(p, f::kFixedHeaderBytes + header_bytes, data_offset_, where + ": after the JSON header");

  const Json root = detail::parse_json(json, header_bytes, where);
  KILN_CHECK(root.is_object(), where, ": JSON header must be an object, got ", root.type_name());
  for (const auto& [key, value] : root.items())
    KILN_CHECK(key == "format" || key == "version" || key == "meta" || key == "tensors", where,
               ": JSON header has an unknown field ", shown(key));
  for (const char* key : {"format", "version", "meta", "tensors"})
    KILN_CHECK(root.contains(key), where, ": JSON header has no field '", key, "'");
  KILN_CHECK(detail::read_string(root["format"], where + ": field 'format'") == f::kFormatName, where,
             ": field 'format' is ", shown(root["format"].get<std::string>()), ", expected '", f::kFormatName, "'");
  const uint64_t json_version = detail::read_u64(root["version"], where + ": field 'version'");
  KILN_CHECK(json_version == version_, where, ": field 'version' is ", json_version,
             " but the fixed header says ", version_);
  KILN_CHECK(root["meta"].is_object(), where, ": field 'meta' must be an object, got ", root["meta"].type_name());
  meta_ = root["meta"];
  parse_table(root["tensors"], where);
}

void CheckpointReader::parse_table(const Json& tensors, const std::string& where) {
  KILN_CHECK(tensors.is_array(), where, ": field 'tensors' must be an array, got ", tensors.type_name());
  static const std::string kFields[] = {"name", "dtype", "shape", "offset", "nbytes", "crc32c"};
  records_.reserve(tensors.size());
  uint64_t prev_end = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Json& e = tensors[i];
    std::string at = where + ": tensor entry " + std::to_string(i);
    KILN_CHECK(e.is_object(), at, ": must be an object, got ", e.type_name());
    if (e.contains("name") && e["name"].is_string()) at = where + ": tensor " + shown(e["name"].get<std::string>()) +
                                                           " (entry " + std::to_string(i) + ")";
    for (auto it = e.begin(); it != e.end(); ++it) {
      const std::string& key = it.key();
      KILN_CHECK(std::find(std::begin(kFields), std::end(kFields), key) != std::end(kFields), at, ": unknown field ",
                 shown(key));
    }
    for (const std::string& key : kFields) KILN_CHECK(e.contains(key), at, ": missing field '", key, "'");

    TensorRecord r;
    r.name = detail::read_string(e["name"], at + ", field 'name'");
    detail::check_name(r.name, at + ", field 'name'");
    KILN_CHECK(index_.emplace(r.name, i).second, at, ", field 'name': duplicate tensor name ", shown(r.name),
               " (also entry ", index_[r.name], ")");
    const std::string dtype = detail::read_string(e["dtype"], at + ", field 'dtype'");
    const auto parsed = detail::dtype_from_name(dtype);
    KILN_CHECK(parsed, at, ", field 'dtype': unknown dtype ", shown(dtype),
               " (known: float32 float64 float16 bfloat16 int64 int32 uint8 bool)");
    r.dtype = *parsed;
    r.shape = detail::read_shape(e["shape"], at + ", field 'shape'");
    const uint64_t expected = detail::checked_nbytes(r.shape, r.dtype, at + ", field 'shape'");
    r.nbytes = detail::read_u64(e["nbytes"], at + ", field 'nbytes'");
    KILN_CHECK(r.nbytes == expected, at, ", field 'nbytes': ", r.nbytes, " does not match ", r.dtype, " x ",
               r.shape, " = ", expected, " bytes");
    r.offset = detail::read_u64(e["offset"], at + ", field 'offset'");
    KILN_CHECK(r.offset <= data_bytes_, at, ", field 'offset': ", r.offset, " is past the end of the ",
               data_bytes_, "-byte data section");
    KILN_CHECK(r.nbytes <= data_bytes_ - r.offset, at, ", field 'nbytes': ", r.nbytes, " bytes at offset ",
               r.offset, " run past the end of the ", data_bytes_, "-byte data section");
    KILN_CHECK(r.offset % format::kAlignment == 0, at, ", field 'offset': ", r.offset, " is not ",
               format::kAlignment, "-byte aligned");
    if (i > 0) {
      const TensorRecord& prev = records_.back();
      KILN_CHECK(r.offset >= prev.offset, at, ", field 'offset': ", r.offset, " comes before the previous tensor ",
                 shown(prev.name), " (offset ", prev.offset, "); entries must be in file order");
      KILN_CHECK(r.offset >= prev_end, at, ", field 'offset': ", r.offset, " overlaps the previous tensor ",
                 shown(prev.name), ", which ends at ", prev_end);
    }
    KILN_CHECK(r.offset == format::align_up(prev_end), at, ", field 'offset': ", r.offset, " leaves a gap of ",
               r.offset - prev_end, " bytes after ",
               i ? "the previous tensor " + shown(records_.back().name) : std::string("the start of the data"),
               " (expected ", format::align_up(prev_end), ")");
    check_zero_padding(bytes_->data(), data_offset_ + prev_end, data_offset_ + r.offset,
                       at + ": before the tensor");
    r.crc32c = parse_crc_field(e["crc32c"], at + ", field 'crc32c'");
    prev_end = r.offset + r.nbytes;
    records_.push_back(std::move(r));
  }
  KILN_CHECK(prev_end == data_bytes_, where, ": the data section has ", data_bytes_ - prev_end,
             " bytes after the last tensor (it is ", data_bytes_, " bytes, the tensors end at ", prev_end, ")");
}

std::vector<std::string> CheckpointReader::names() const {
  std::vector<std::string> out;
  out.reserve(records_.size());
  for (const auto& r : records_) out.push_back(r.name);
  return out;
}

const TensorRecord* CheckpointReader::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &records_[it->second];
}

void CheckpointReader::check_data(const TensorRecord& r) const {
  const uint32_t actual = crc32c(raw(r), r.nbytes);
  KILN_CHECK(actual == r.crc32c, "checkpoint '", path(), "': tensor ", shown(r.name), ", field 'crc32c': checksum mismatch (stored ",
             hex8(r.crc32c), ", computed ", hex8(actual), "): the tensor's data is corrupt");
}

Tensor CheckpointReader::get(std::string_view name, bool zero_copy, bool verify) const {
  const TensorRecord* r = find(name);
  if (!r) {
    std::string have;
    for (size_t i = 0; i < records_.size() && i < 8; ++i) have += (i ? ", " : "") + shown(records_[i].name);
    if (records_.size() > 8) have += ", ...";
    kiln::detail::throw_error("checkpoint '", path(), "': no tensor named ", shown(name), " (it has ", records_.size(),
                        " tensors: ", have, ")");
  }
  if (verify) check_data(*r);
  if (r->dtype == DType::boolean)
    detail::check_bool_bytes(raw(*r), r->nbytes, "checkpoint '" + path() + "': tensor " + shown(r->name));
  const auto addr = reinterpret_cast<uintptr_t>(raw(*r));
  if (zero_copy && addr % dtype_size(r->dtype) == 0) {
    auto keep_alive = bytes_;
    return from_blob(const_cast<uint8_t*>(raw(*r)), r->shape, r->dtype, [keep_alive](void*) {});
  }
  Tensor t = make_tensor(r->shape, r->dtype, Device::cpu());
  bytes_->copy_out(data_offset_ + r->offset, t.data_ptr(), r->nbytes);
  return t;
}

void CheckpointReader::verify_all() const {
  for (const auto& r : records_) {
    check_data(r);
    if (r.dtype == DType::boolean)
      detail::check_bool_bytes(raw(r), r.nbytes, "checkpoint '" + path() + "': tensor " + shown(r.name));
  }
}

State CheckpointReader::load(const LoadOptions& options) const {
  State state;
  state.meta = meta_;
  if (options.names.empty()) {
    bytes_->advise_sequential(data_offset_, data_bytes_);
    for (const auto& r : records_) state.tensors.insert(r.name, get(r.name, options.zero_copy, options.verify));
  } else {
    for (const auto& name : options.names) state.tensors.insert(name, get(name, options.zero_copy, options.verify));
  }
  return state;
}

State load(const std::string& path, const LoadOptions& options) {
  return CheckpointReader::open(path).load(options);
}

std::string detect_format(const std::string& path) {
  struct stat st {};
  KILN_CHECK(::stat(path.c_str(), &st) == 0, "detect_format: cannot stat '", path, "': ", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) {
    struct stat index {};
    return ::stat((path + "/index.json").c_str(), &index) == 0 ? "kiln-sharded" : "unknown";
  }
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, "detect_format: cannot open '", path, "'");
  uint8_t head[9] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = static_cast<uint64_t>(in.gcount());
  if (got >= 8 && std::memcmp(head, format::kMagic, 8) == 0) return "kiln";
  // safetensors: u64 header length, then a JSON object that fits in the file.
  const auto size = static_cast<uint64_t>(st.st_size);
  if (got == 9 && head[8] == '{' && format::load_le<uint64_t>(head) <= size - 8) return "safetensors";
  return "unknown";
}

}  // namespace kiln::io
