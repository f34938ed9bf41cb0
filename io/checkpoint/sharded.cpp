// Sharded save and load with resharding (see sharded.h for the contract).
#include "io/checkpoint/sharded.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <set>
#include <sstream>

#include "io/checkpoint/atomic_file.h"
#include "io/checkpoint/validate.h"

namespace kiln::io {
namespace {

using detail::shown;
constexpr const char* kIndex = "index.json";
constexpr const char* kIndexFormat = "kiln-sharded";

std::string hex8(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", v);
  return buf;
}

// Rank 0: checks that the shards agree and writes index.json atomically.
void write_index(const std::string& dir, int world_size, const Json& meta, const std::set<std::string>& replicated,
                 bool fsync) {
  const std::string where = "save_sharded: '" + dir + "'";
  std::vector<CheckpointReader> shards;
  for (int r = 0; r < world_size; ++r) shards.push_back(CheckpointReader::open(dir + "/" + shard_file_name(r, world_size)));

  Json index = {{"format", kIndexFormat}, {"version", 1}, {"world_size", world_size}, {"meta", meta}};
  Json shard_list = Json::array(), tensors = Json::array();
  for (int r = 0; r < world_size; ++r)
    shard_list.push_back({{"file", shard_file_name(r, world_size)}, {"header_crc32c", hex8(shards[static_cast<size_t>(r)].header_crc32c())}});
  for (const TensorRecord& rec : shards[0].records()) {
    Json shape = Json::array();
    if (replicated.count(rec.name)) {
      for (int64_t s : rec.shape) shape.push_back(s);
      tensors.push_back({{"name", rec.name}, {"dtype", dtype_name(rec.dtype)}, {"shape", shape}, {"split", "replicated"}});
      continue;
    }
    Json rows = Json::array();
    int64_t total = 0;
    for (int r = 0; r < world_size; ++r) {
      const TensorRecord* piece = shards[static_cast<size_t>(r)].find(rec.name);
      KILN_CHECK(piece, where, ": tensor ", shown(rec.name), " is on rank 0 but not on rank ", r,
                 " (list it in ShardedSaveOptions::replicated if only rank 0 holds it)");
      KILN_CHECK(piece->dtype == rec.dtype, where, ": tensor ", shown(rec.name), " is ", rec.dtype, " on rank 0 but ",
                 piece->dtype, " on rank ", r);
      Dims trailing_0 = rec.shape, trailing_r = piece->shape;
      trailing_0.erase(0);
      trailing_r.erase(0);
      KILN_CHECK(trailing_0 == trailing_r, where, ": tensor ", shown(rec.name), " has shape ", rec.shape,
                 " on rank 0 but ", piece->shape, " on rank ", r, " (only dim 0 may differ)");
      rows.push_back(piece->shape[0]);
      total += piece->shape[0];
    }
    shape.push_back(total);
    for (int d = 1; d < rec.shape.size(); ++d) shape.push_back(rec.shape[d]);
    tensors.push_back({{"name", rec.name}, {"dtype", dtype_name(rec.dtype)}, {"shape", shape}, {"split", "dim0"}, {"rows", rows}});
  }
  for (int r = 1; r < world_size; ++r)
    for (const TensorRecord& rec : shards[static_cast<size_t>(r)].records())
      KILN_CHECK(shards[0].contains(rec.name), where, ": tensor ", shown(rec.name), " is on rank ", r,
                 " but not on rank 0");
  index["shards"] = shard_list;
  index["tensors"] = tensors;

  const std::string text = index.dump(1) + "\n";
  AtomicFile file(dir + "/" + kIndex, fsync, "save_sharded");
  file.write_at(0, text.data(), text.size());
  file.commit();
}

Json read_index(const std::string& dir) {
  const std::string path = dir + "/" + kIndex;
  std::ifstream in(path, std::ios::binary);
  KILN_CHECK(in, "load_sharded: '", dir, "' has no ", kIndex, " (not a sharded checkpoint, or its save did not finish)");
  std::stringstream text;
  text << in.rdbuf();
  const std::string s = text.str();
  KILN_CHECK(s.size() <= (64u << 20), "load_sharded: '", path, "' is ", s.size(), " bytes, more than 64 MiB");
  return detail::parse_json(s.data(), s.size(), "load_sharded: '" + path + "'");
}

void run_phase(std::exception_ptr& error, const std::function<void()>& work) {
  if (error) return;
  try {
    work();
  } catch (...) {
    error = std::current_exception();
  }
}

}  // namespace

std::string shard_file_name(int rank, int world_size) {
  char name[64];
  std::snprintf(name, sizeof name, "shard-%05d-of-%05d.kiln", rank, world_size);
  return name;
}

std::pair<int64_t, int64_t> shard_rows(int64_t n, int rank, int world_size) {
  const auto at = [&](int r) { return static_cast<int64_t>(static_cast<__int128>(n) * r / world_size); };
  return {at(rank), at(rank + 1)};
}

void save_sharded(const std::string& dir, int rank, int world_size, const State& shard,
                  const ShardedSaveOptions& options) {
  KILN_CHECK(world_size >= 1 && world_size <= 99999 && rank >= 0 && rank < world_size, "save_sharded: rank ", rank,
             " of world_size ", world_size, " is out of range");
  KILN_CHECK(world_size == 1 || options.barrier, "save_sharded: world_size is ", world_size,
             "; ShardedSaveOptions::barrier is required to coordinate the ranks");
  const auto barrier = [&] { if (options.barrier) options.barrier(); };
  const std::set<std::string> replicated(options.replicated.begin(), options.replicated.end());
  const std::string index_path = dir + "/" + kIndex;
  const std::string shard_path = dir + "/" + shard_file_name(rank, world_size);
  std::exception_ptr error;

  run_phase(error, [&] {
    if (::mkdir(dir.c_str(), 0755) != 0)
      KILN_CHECK(errno == EEXIST, "save_sharded: cannot create '", dir, "': ", std::strerror(errno));
    if (rank == 0 && file_ops().unlink(index_path) == 0) file_ops().fsync_dir(dir);
  });
  barrier();  // from here on, no index names the old shards
  run_phase(error, [&] {
    file_ops().unlink(shard_path);  // a rank that fails must not leave an old shard to be indexed
    State local;
    local.meta = {{"kiln.shard", {{"rank", rank}, {"world_size", world_size}}}};
    for (const auto& [name, tensor] : shard.tensors) {
      if (replicated.count(name)) {
        if (rank == 0) local.tensors.insert(name, tensor);
        continue;
      }
      KILN_CHECK(tensor.defined() && tensor.dim() >= 1, "save_sharded: rank ", rank, ": tensor ", shown(name),
                 " is 0-d; split tensors are split along dim 0 (list it in ShardedSaveOptions::replicated)");
      local.tensors.insert(name, tensor);
    }
    for (const auto& name : replicated)
      KILN_CHECK(rank != 0 || shard.tensors.contains(name), "save_sharded: replicated tensor ", shown(name),
                 " is not in rank 0's state");
    save(shard_path, local, options.save);
  });
  barrier();
  if (rank == 0) run_phase(error, [&] { write_index(dir, world_size, shard.meta, replicated, options.save.fsync); });
  barrier();
  if (error) std::rethrow_exception(error);
  // Every rank checks the commit point: the index exists and names this rank's shard as written.
  const Json index = read_index(dir);
  const uint32_t mine = CheckpointReader::open(shard_path).header_crc32c();
  const Json& shards = index.at("shards");
  KILN_CHECK(shards.is_array() && shards.size() == static_cast<size_t>(world_size) &&
                 shards[static_cast<size_t>(rank)].value("header_crc32c", "") == hex8(mine),
             "save_sharded: rank ", rank, ": the index in '", dir, "' does not list this rank's shard (rank 0 failed?)");
}

State load_sharded(const std::string& dir, int rank, int world_size, const LoadOptions& options) {
  KILN_CHECK(world_size >= 1 && rank >= 0 && rank < world_size, "load_sharded: rank ", rank, " of world_size ",
             world_size, " is out of range");
  const Json index = read_index(dir);
  const std::string where = "load_sharded: '" + dir + "/" + kIndex + "'";
  KILN_CHECK(index.is_object() && index.value("format", "") == kIndexFormat, where, ": field 'format' is not '",
             kIndexFormat, "'");
  KILN_CHECK(index.contains("version") && detail::read_u64(index["version"], where + ", field 'version'") == 1, where,
             ": unsupported version ", index.value("version", Json()).dump());
  const uint64_t saved_world = detail::read_u64(index.value("world_size", Json()), where + ", field 'world_size'");
  const Json& shard_list = index.value("shards", Json());
  KILN_CHECK(saved_world >= 1 && shard_list.is_array() && shard_list.size() == saved_world, where,
             ": 'shards' must list world_size = ", saved_world, " files");
  std::vector<CheckpointReader> shards;
  for (size_t r = 0; r < saved_world; ++r) {
    const std::string file = shard_file_name(static_cast<int>(r), static_cast<int>(saved_world));
    KILN_CHECK(shard_list[r].is_object() && shard_list[r].value("file", "") == file, where, ": shard ", r,
               " must be '", file, "'");
    shards.push_back(CheckpointReader::open(dir + "/" + file));
    KILN_CHECK(shard_list[r].value("header_crc32c", "") == hex8(shards.back().header_crc32c()), where, ": shard file '",
               file, "' does not match the index (left by another save, or the save did not finish)");
  }

  State state;
  state.meta = index.value("meta", Json::object());
  const Json& tensors = index.value("tensors", Json());
  KILN_CHECK(tensors.is_array(), where, ": field 'tensors' must be an array");
  std::set<std::string> wanted(options.names.begin(), options.names.end());
  const bool subset = !wanted.empty();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Json& e = tensors[i];
    const std::string at = where + ": tensor entry " + std::to_string(i);
    KILN_CHECK(e.is_object(), at, ": must be an object");
    const std::string name = detail::read_string(e.value("name", Json()), at + ", field 'name'");
    if (subset && !wanted.erase(name)) continue;
    const std::string split = detail::read_string(e.value("split", Json()), at + ", field 'split'");
    if (split == "replicated") {
      state.tensors.insert(name, shards[0].get(name, options.zero_copy, options.verify));
      continue;
    }
    KILN_CHECK(split == "dim0", at, ", field 'split': unknown split ", shown(split), " (expected dim0 or replicated)");
    const Dims shape = detail::read_shape(e.value("shape", Json()), at + ", field 'shape'");
    const Json& rows = e.value("rows", Json());
    KILN_CHECK(shape.size() >= 1 && rows.is_array() && rows.size() == saved_world, at,
               ": a dim0 tensor needs a shape of rank >= 1 and one row count per shard");
    const auto [first, last] = shard_rows(shape[0], rank, world_size);
    std::vector<Tensor> pieces;  // (global row of piece start) implied by walking shards in order
    int64_t shard_start = 0;
    for (size_t r = 0; r < saved_world; ++r) {
      const int64_t n = static_cast<int64_t>(detail::read_u64(rows[r], at + ", field 'rows'"));
      const int64_t lo = std::max(first, shard_start), hi = std::min(last, shard_start + n);
      if (lo < hi) {
        Tensor whole = shards[r].get(name, /*zero_copy=*/true, options.verify);
        KILN_CHECK(whole.dim() == shape.size() && whole.shape()[0] == n, at, ": shard ", r, " holds shape ",
                   whole.shape(), ", the index says ", n, " rows of ", shape);
        pieces.push_back(whole.narrow(0, lo - shard_start, hi - lo));
      }
      shard_start += n;
    }
    KILN_CHECK(shard_start == shape[0], at, ": row counts add up to ", shard_start, ", not shape[0] = ", shape[0]);
    Dims out_shape = shape;
    out_shape[0] = last - first;
    if (options.zero_copy && pieces.size() == 1) {
      state.tensors.insert(name, pieces[0]);
      continue;
    }
    const std::optional<DType> dtype = detail::dtype_from_name(detail::read_string(e.value("dtype", Json()), at + ", field 'dtype'"));
    KILN_CHECK(dtype, at, ", field 'dtype': unknown dtype");
    Tensor out = make_tensor(out_shape, *dtype, Device::cpu());
    auto* dst = static_cast<uint8_t*>(out.data_ptr());
    for (const Tensor& piece : pieces) {
      KILN_CHECK(piece.dtype() == *dtype, at, ": a shard holds ", piece.dtype(), ", the index says ", *dtype);
      std::memcpy(dst, piece.data_ptr(), piece.nbytes());  // rows of a contiguous tensor are contiguous
      dst += piece.nbytes();
    }
    state.tensors.insert(name, out);
  }
  KILN_CHECK(wanted.empty(), "load_sharded: '", dir, "' has no tensor named ", shown(*wanted.begin()));
  return state;
}

}  // namespace kiln::io
