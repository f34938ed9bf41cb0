// The safetensors reader and writer. Validation mirrors the reference implementation's rules (header
// cap, '{' first, offsets within the buffer, nbytes = dtype x shape, no holes, no overlaps, buffer
// fully covered) and adds the native reader's (duplicate keys, nesting, rank, overflow, bool bytes).
#include "io/safetensors/safetensors.h"

#include <algorithm>
#include <cstring>

#include "io/checkpoint/atomic_file.h"
#include "io/checkpoint/format.h"
#include "io/checkpoint/tensor_bytes.h"
#include "io/checkpoint/validate.h"
#include "tensor/factories.h"

namespace kiln::io {
namespace {

using detail::shown;
constexpr std::string_view kMetadataKey = "__metadata__";

// Bytes of a tensor of `bits`-bit elements: a whole number of bytes, as the format requires of
// the sub-byte dtypes (F4, F6_*), overflow-checked.
uint64_t checked_nbytes(const Dims& shape, SafetensorsDType dtype, const std::string& where) {
  const uint64_t numel = detail::checked_nbytes(shape, DType::u8, where);
  const auto bits = static_cast<uint64_t>(safetensors_dtype_bits(dtype));
  uint64_t total_bits = 0;
  KILN_CHECK(!__builtin_mul_overflow(numel, bits, &total_bits), where, ": ", safetensors_dtype_name(dtype), " x ",
             shape, " needs more than 2^64 bits");
  KILN_CHECK(total_bits % 8 == 0, where, ": ", safetensors_dtype_name(dtype), " x ", shape, " is ", total_bits,
             " bits, not a whole number of bytes");
  return total_bits / 8;
}

}  // namespace

std::string_view safetensors_dtype_name(DType dtype) { return safetensors_dtype_name(safetensors_dtype(dtype)); }

std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  const auto d = safetensors_dtype_from_name(name);
  return d ? kiln_dtype(*d) : std::nullopt;
}

SafetensorsReader::SafetensorsReader(std::shared_ptr<const FileBytes> bytes) : bytes_(std::move(bytes)) { parse(); }

SafetensorsReader SafetensorsReader::open(const std::string& path) {
  return SafetensorsReader(FileBytes::map(path, "load_safetensors"));
}

SafetensorsReader SafetensorsReader::from_memory(const void* data, size_t size, std::string label) {
  return SafetensorsReader(FileBytes::borrow(data, size, std::move(label)));
}

void SafetensorsReader::parse() {
  const std::string where = "safetensors '" + bytes_->label() + "'";
  const uint8_t* p = bytes_->data();
  const uint64_t size = bytes_->size();
  KILN_CHECK(size >= 8, where, ": file is ", size, " bytes, smaller than the 8-byte header length (truncated?)");
  header_bytes_ = format::load_le<uint64_t>(p);
  KILN_CHECK(header_bytes_ > 0, where, ": header length (bytes 0..7) is 0");
  KILN_CHECK(header_bytes_ <= kSafetensorsMaxHeaderBytes, where, ": header length (bytes 0..7) is ", header_bytes_,
             ", more than the limit of ", kSafetensorsMaxHeaderBytes);
  KILN_CHECK(header_bytes_ <= size - 8, where, ": header length (bytes 0..7) is ", header_bytes_,
             ", past the end of the ", size, "-byte file (truncated?)");
  const char* json = reinterpret_cast<const char*>(p + 8);
  KILN_CHECK(json[0] == '{', where, ": the JSON header must start with '{', got byte ", static_cast<int>(p[8]));
  const Json root = detail::parse_json(json, header_bytes_, where);
  KILN_CHECK(root.is_object(), where, ": JSON header must be an object, got ", root.type_name());
  const uint64_t buffer = size - 8 - header_bytes_;

  for (const auto& [name, entry] : root.items()) {
    if (name == kMetadataKey) {
      const std::string at = where + ": field '__metadata__'";
      KILN_CHECK(entry.is_object(), at, ": must be an object of strings, got ", entry.type_name());
      for (const auto& [key, value] : entry.items()) {
        KILN_CHECK(value.is_string(), at, ": value of ", shown(key), " must be a string, got ", value.type_name());
        metadata_.emplace(key, value.get<std::string>());
      }
      continue;
    }
    const std::string at = where + ": tensor " + shown(name);
    detail::check_name(name, at);
    KILN_CHECK(entry.is_object(), at, ": must be an object, got ", entry.type_name());
    for (const auto& [key, value] : entry.items())
      KILN_CHECK(key == "dtype" || key == "shape" || key == "data_offsets", at, ": unknown field ", shown(key));
    for (const char* key : {"dtype", "shape", "data_offsets"})
      KILN_CHECK(entry.contains(key), at, ": missing field '", key, "'");
    SafetensorsRecord r;
    r.name = name;
    const std::string dtype = detail::read_string(entry["dtype"], at + ", field 'dtype'");
    const auto parsed = safetensors_dtype_from_name(dtype);
    KILN_CHECK(parsed, at, ", field 'dtype': unknown dtype ", shown(dtype));
    r.dtype = *parsed;
    r.shape = detail::read_shape(entry["shape"], at + ", field 'shape'");
    const uint64_t nbytes = checked_nbytes(r.shape, r.dtype, at + ", field 'shape'");
    const Json& offsets = entry["data_offsets"];
    KILN_CHECK(offsets.is_array() && offsets.size() == 2, at, ", field 'data_offsets': expected [begin, end], got ",
               shown(offsets.dump()));
    r.begin = detail::read_u64(offsets[0], at + ", field 'data_offsets'");
    r.end = detail::read_u64(offsets[1], at + ", field 'data_offsets'");
    KILN_CHECK(r.begin <= r.end, at, ", field 'data_offsets': begin ", r.begin, " is after end ", r.end, " (reversed)");
    KILN_CHECK(r.end <= buffer, at, ", field 'data_offsets': end ", r.end, " is past the end of the ", buffer,
               "-byte data buffer");
    KILN_CHECK(r.end - r.begin == nbytes, at, ", field 'data_offsets': [", r.begin, ", ", r.end, ") holds ",
               r.end - r.begin, " bytes, but ", safetensors_dtype_name(r.dtype), " x ", r.shape, " needs ", nbytes);
    records_.push_back(std::move(r));
  }

  std::sort(records_.begin(), records_.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < records_.size(); ++i) {
    const SafetensorsRecord& r = records_[i];
    const std::string at = where + ": tensor " + shown(r.name) + ", field 'data_offsets'";
    KILN_CHECK(r.begin >= covered, at, ": [", r.begin, ", ", r.end, ") overlaps tensor ", shown(records_[i - 1].name),
               " (which ends at ", covered, ")");
    KILN_CHECK(r.begin == covered, at, ": leaves a hole of ", r.begin - covered, " bytes before it (after ",
               i ? "tensor " + shown(records_[i - 1].name) : std::string("the start of the buffer"), ")");
    covered = r.end;
  }
  KILN_CHECK(covered == buffer, where, ": ", buffer - covered, " trailing bytes after the last tensor (the buffer is ",
             buffer, " bytes, the tensors cover ", covered, ")");
  index_.reserve(records_.size());
  for (size_t i = 0; i < records_.size(); ++i) index_.emplace(records_[i].name, i);
}

const SafetensorsRecord* SafetensorsReader::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &records_[it->second];
}

std::vector<std::string> SafetensorsReader::names() const {
  std::vector<std::string> out;
  out.reserve(records_.size());
  for (const auto& r : records_) out.push_back(r.name);
  return out;
}

Tensor SafetensorsReader::get(std::string_view name, bool zero_copy, const SafetensorsConvert& convert) const {
  const SafetensorsRecord* r = find(name);
  KILN_CHECK(r, "safetensors '", path(), "': no tensor named ", shown(name), " (it has ", records_.size(), " tensors)");
  return read(*r, zero_copy, convert);
}

Tensor SafetensorsReader::read(const SafetensorsRecord& r, bool zero_copy, const SafetensorsConvert& convert) const {
  const std::string at = "safetensors '" + path() + "': tensor " + shown(r.name);
  const DType dtype = converted_dtype(r.dtype, convert, at);
  const uint64_t offset = 8 + header_bytes_ + r.begin, nbytes = r.end - r.begin;
  const uint8_t* src = bytes_->data() + offset;
  if (!kiln_dtype(r.dtype)) {
    Tensor t = make_tensor(r.shape, dtype, Device::cpu());
    convert_elements(r.dtype, src, t.numel(), dtype, t.data_ptr(), at);
    return t;
  }
  if (dtype == DType::boolean) detail::check_bool_bytes(src, nbytes, at);
  if (zero_copy && reinterpret_cast<uintptr_t>(src) % dtype_size(dtype) == 0) {
    auto keep_alive = bytes_;
    return from_blob(const_cast<uint8_t*>(src), r.shape, dtype, [keep_alive](void*) {});
  }
  Tensor t = make_tensor(r.shape, dtype, Device::cpu());
  bytes_->copy_out(offset, t.data_ptr(), nbytes);
  return t;
}

void SafetensorsReader::verify_all() const {
  for (const auto& r : records_)
    if (r.dtype == SafetensorsDType::BOOL)
      detail::check_bool_bytes(bytes_->data() + 8 + header_bytes_ + r.begin, r.end - r.begin,
                               "safetensors '" + path() + "': tensor " + shown(r.name));
}

TensorDict SafetensorsReader::load(const LoadOptions& options, const SafetensorsConvert& convert) const {
  TensorDict out;
  if (options.names.empty()) {
    bytes_->advise_sequential(8 + header_bytes_, bytes_->size() - 8 - header_bytes_);
    for (const auto& r : records_) out.insert(r.name, read(r, options.zero_copy, convert));
  } else {
    for (const auto& name : options.names) out.insert(name, get(name, options.zero_copy, convert));
  }
  return out;
}

TensorDict load_safetensors(const std::string& path, const LoadOptions& options, const SafetensorsConvert& convert) {
  return SafetensorsReader::open(path).load(options, convert);
}

void save_safetensors(const std::string& path, const TensorDict& tensors,
                      const std::map<std::string, std::string>& metadata, const SaveOptions& options) {
  const std::string where = "save_safetensors: '" + path + "'";
  std::vector<Tensor> host;
  std::string header = "{";
  try {
    if (!metadata.empty()) {
      header += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [key, value] : metadata) {
        if (!first) header += ',';
        header += Json(key).dump();
        header += ':';
        header += Json(value).dump();
        first = false;
      }
      header += "}";
    }
    uint64_t offset = 0;
    for (const auto& [name, tensor] : tensors) {
      detail::check_name(name, where);
      KILN_CHECK(name != kMetadataKey, where, ": a tensor cannot be named '__metadata__'");
      host.push_back(detail::on_host(tensor, "save_safetensors", name));
      const Tensor& t = host.back();
      Json shape = Json::array();
      for (int64_t s : t.shape()) shape.push_back(s);
      if (header.size() > 1) header += ',';
      header += Json(name).dump();
      header += ":{\"dtype\":\"";
      header += safetensors_dtype_name(t.dtype());
      header += "\",\"shape\":";
      header += shape.dump();
      header += ",\"data_offsets\":[";
      header += std::to_string(offset);
      header += ',';
      header += std::to_string(offset + t.nbytes());
      header += "]}";
      offset += t.nbytes();
    }
  } catch (const Json::exception& e) {
    kiln::detail::throw_error(where, ": a name or metadata string cannot be written as JSON (", e.what(), ")");
  }
  header += "}";
  header.resize(format::align_up(header.size(), 8), ' ');
  KILN_CHECK(header.size() <= kSafetensorsMaxHeaderBytes, where, ": the JSON header would be ", header.size(),
             " bytes, more than the format's limit of ", kSafetensorsMaxHeaderBytes);

  AtomicFile file(path, options.fsync, "save_safetensors");
  uint8_t length[8];
  format::store_le<uint64_t>(length, header.size());
  file.write_at(0, length, 8);
  file.write_at(8, header.data(), header.size());
  uint64_t at = 8 + header.size();
  for (const Tensor& t : host)
    detail::for_each_chunk(t, options.chunk_bytes, [&](const uint8_t* bytes, size_t n) {
      file.write_at(at, bytes, n);
      at += n;
    });
  file.commit();
  remove_stale_temporaries(path);
}

}  // namespace kiln::io
