// The native checkpoint writer. Layout first (offsets are known before any byte is written, and
// checksums are printed with a fixed width), then data, then the final header written over the
// provisional one.
#include "io/checkpoint/writer.h"

#include <vector>

#include "io/checkpoint/atomic_file.h"
#include "io/checkpoint/checksum.h"
#include "io/checkpoint/format.h"
#include "io/checkpoint/tensor_bytes.h"
#include "io/checkpoint/validate.h"

namespace kiln::io {
namespace {

struct PlannedTensor {
  const std::string* name;
  Tensor host;  // released once written
  Dims shape;
  DType dtype;
  uint64_t offset = 0, nbytes = 0;
  uint32_t crc = 0;
};

std::string hex8(uint32_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(8, '0');
  for (int i = 7; i >= 0; --i, v >>= 4) s[static_cast<size_t>(i)] = kHex[v & 15u];
  return s;
}

// The JSON header, with the keys in the order the format document lists them.
std::string render_header(const Json& meta, const std::vector<PlannedTensor>& tensors, const std::string& path) {
  std::string out = "{\"format\":\"" + std::string(format::kFormatName) + "\",\"version\":" +
                    std::to_string(format::kVersion) + ",\"meta\":";
  try {
    out += meta.dump();
    out += ",\"tensors\":[";
    for (size_t i = 0; i < tensors.size(); ++i) {
      const PlannedTensor& t = tensors[i];
      Json shape = Json::array();
      for (int64_t s : t.shape) shape.push_back(s);
      out += (i ? ",{\"name\":" : "{\"name\":") + Json(*t.name).dump() + ",\"dtype\":\"" +
             std::string(dtype_name(t.dtype)) + "\",\"shape\":" + shape.dump() +
             ",\"offset\":" + std::to_string(t.offset) + ",\"nbytes\":" + std::to_string(t.nbytes) +
             ",\"crc32c\":\"" + hex8(t.crc) + "\"}";
    }
  } catch (const Json::exception& e) {
    kiln::detail::throw_error("save: '", path, "': metadata or a tensor name cannot be written as JSON (", e.what(), ")");
  }
  return out + "]}";
}

}  // namespace

void save(const std::string& path, const State& state, const SaveOptions& options) {
  KILN_CHECK(state.meta.is_object() || state.meta.is_null(), "save: '", path,
             "': State::meta must be a JSON object, got ", state.meta.type_name());
  KILN_CHECK(options.chunk_bytes >= 64, "save: chunk_bytes must be at least 64, got ", options.chunk_bytes);
  const Json& meta = state.meta.is_null() ? Json::object() : state.meta;
  const std::string where = "save: '" + path + "'";

  std::vector<PlannedTensor> plan;
  plan.reserve(state.tensors.size());
  uint64_t end = 0;
  for (const auto& [name, tensor] : state.tensors) {
    detail::check_name(name, where);
    PlannedTensor p{&name, detail::on_host(tensor, "save", name)};
    p.shape = p.host.shape();
    p.dtype = p.host.dtype();
    p.nbytes = p.host.nbytes();
    p.offset = format::align_up(end);
    end = p.offset + p.nbytes;
    plan.push_back(std::move(p));
  }

  // Checksums print as 8 hex digits, so the provisional header (zero checksums) has the final
  // header's length.
  const std::string provisional = render_header(meta, plan, path);
  // Whatever the writer produces, the reader must accept: same parser, same limits.
  KILN_CHECK(provisional.size() <= format::kMaxHeaderBytes, where, ": the JSON header would be ",
             provisional.size(), " bytes, more than the format's limit of ", format::kMaxHeaderBytes);
  detail::parse_json(provisional.data(), provisional.size(), where);

  format::FixedHeader fixed;
  fixed.header_bytes = provisional.size();
  fixed.data_offset = format::align_up(format::kFixedHeaderBytes + provisional.size());
  fixed.data_bytes = end;

  AtomicFile file(path, options.fsync, "save");
  static constexpr uint8_t kZeros[format::kAlignment] = {};
  uint64_t written_end = 0;  // of the data section
  for (PlannedTensor& p : plan) {
    if (p.offset > written_end) file.write_at(fixed.data_offset + written_end, kZeros, p.offset - written_end);
    uint64_t at = fixed.data_offset + p.offset;
    uint32_t crc = 0;
    detail::for_each_chunk(p.host, options.chunk_bytes, [&](const uint8_t* bytes, size_t n) {
      crc = crc32c(bytes, n, crc);
      file.write_at(at, bytes, n);
      at += n;
    });
    p.crc = crc;
    written_end = p.offset + p.nbytes;
    p.host = Tensor();  // a device tensor's host copy is freed as soon as it is written
  }

  const std::string header = render_header(meta, plan, path);
  KILN_ASSERT(header.size() == provisional.size(), "checkpoint header changed length: ", provisional.size(),
              " -> ", header.size());
  fixed.header_crc = crc32c(header.data(), header.size());
  uint8_t fixed_bytes[format::kFixedHeaderBytes];
  format::encode(fixed, fixed_bytes);
  std::string head(reinterpret_cast<const char*>(fixed_bytes), sizeof fixed_bytes);
  head += header;
  head.resize(fixed.data_offset, '\0');  // zero padding up to the data section
  file.write_at(0, head.data(), head.size());
  file.commit();
  remove_stale_temporaries(path);
}

}  // namespace kiln::io
