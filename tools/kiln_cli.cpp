// The `kiln` command: `kiln ckpt inspect|verify|convert`. Inspect prints a checkpoint's metadata
// and tensor table; verify checks every checksum (or, for safetensors, which has none, the
// structure); convert turns a native file into safetensors and back. Formats are told apart by
// content. Exit status: 0 good, 1 bad file (one line on stderr), 2 wrong usage.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "io/checkpoint/checkpoint.h"
#include "io/safetensors/safetensors.h"

namespace {

using namespace kiln;

constexpr const char* kUsage =
    "usage: kiln ckpt inspect FILE\n"
    "       kiln ckpt verify FILE\n"
    "       kiln ckpt convert FILE --to safetensors|kiln [-o OUT]\n"
    "FILE is a native Kiln checkpoint, a safetensors file or a sharded checkpoint folder (told by content).\n";

// Key in safetensors metadata that carries a native checkpoint's JSON meta (when it is not a
// flat object of strings, which maps onto safetensors metadata directly).
constexpr const char* kMetaKey = "kiln.meta";

std::string shape_str(const Dims& d) {
  std::string s = "[";
  for (int i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

void print_row(const std::string& name, const std::string& dtype, const std::string& shape, const std::string& bytes,
               const std::string& where, const std::string& check) {
  std::printf("  %-40s %-9s %-18s %12s %14s %10s\n", name.c_str(), dtype.c_str(), shape.c_str(), bytes.c_str(),
              where.c_str(), check.c_str());
}

int inspect(const std::string& path) {
  const std::string format = io::detect_format(path);
  if (format == "kiln") {
    const auto r = io::CheckpointReader::open(path);
    std::printf("%s: Kiln checkpoint, format version %u, %zu tensors, %llu bytes\n", path.c_str(), r.version(),
                r.records().size(), static_cast<unsigned long long>(r.file_size()));
    std::printf("meta: %s\n", r.meta().dump(2).c_str());
    print_row("name", "dtype", "shape", "nbytes", "offset", "crc32c");
    for (const auto& t : r.records()) {
      char crc[16];
      std::snprintf(crc, sizeof crc, "%08x", t.crc32c);
      print_row(t.name, std::string(dtype_name(t.dtype)), shape_str(t.shape), std::to_string(t.nbytes),
                std::to_string(t.offset), crc);
    }
  } else if (format == "safetensors") {
    const auto r = io::SafetensorsReader::open(path);
    std::printf("%s: safetensors, %zu tensors, %llu-byte header\n", path.c_str(), r.records().size(),
                static_cast<unsigned long long>(r.header_bytes()));
    std::printf("metadata: %s\n", Json(r.metadata()).dump(2).c_str());
    print_row("name", "dtype", "shape", "nbytes", "data_offsets", "");
    for (const auto& t : r.records())
      print_row(t.name, std::string(io::safetensors_dtype_name(t.dtype)), shape_str(t.shape),
                std::to_string(t.end - t.begin), std::to_string(t.begin) + ".." + std::to_string(t.end), "");
  } else if (format == "kiln-sharded") {
    const State s = io::load_sharded(path, 0, 1, {.zero_copy = true, .verify = false});
    std::printf("%s: sharded Kiln checkpoint, %zu tensors (shown whole)\n", path.c_str(), s.tensors.size());
    std::printf("meta: %s\n", s.meta.dump(2).c_str());
    print_row("name", "dtype", "shape", "nbytes", "", "");
    for (const auto& [name, t] : s.tensors)
      print_row(name, std::string(dtype_name(t.dtype())), shape_str(t.shape()), std::to_string(t.nbytes()), "", "");
  } else {
    throw Error(path + ": not a Kiln checkpoint, a safetensors file or a sharded checkpoint folder");
  }
  return 0;
}

int verify(const std::string& path) {
  const std::string format = io::detect_format(path);
  if (format == "kiln") {
    const auto r = io::CheckpointReader::open(path);
    r.verify_all();
    std::printf("%s: OK, %zu tensors, every checksum matches\n", path.c_str(), r.records().size());
  } else if (format == "safetensors") {
    const auto r = io::SafetensorsReader::open(path);
    r.load({.zero_copy = true});
    std::printf("%s: OK, %zu tensors; structure valid (safetensors has no checksums)\n", path.c_str(),
                r.records().size());
  } else if (format == "kiln-sharded") {
    const State s = io::load_sharded(path, 0, 1, {.zero_copy = true});
    std::printf("%s: OK, sharded, %zu tensors, every checksum matches\n", path.c_str(), s.tensors.size());
  } else {
    throw Error(path + ": not a Kiln checkpoint, a safetensors file or a sharded checkpoint folder");
  }
  return 0;
}

std::string replace_extension(const std::string& path, const std::string& ext) {
  const size_t slash = path.rfind('/'), dot = path.rfind('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  return (has_ext ? path.substr(0, dot) : path) + ext;
}

int convert(const std::string& path, const std::string& to, std::string out) {
  if (to != "safetensors" && to != "kiln") {
    std::fprintf(stderr, "kiln: convert: --to must be safetensors or kiln, got '%s'\n%s", to.c_str(), kUsage);
    return 2;
  }
  const std::string format = io::detect_format(path);
  if (to == "safetensors") {
    if (format != "kiln") throw Error(path + ": convert --to safetensors needs a native Kiln checkpoint, this is " + format);
    if (out.empty()) out = replace_extension(path, ".safetensors");
    const State s = io::load(path, {.zero_copy = true});
    std::map<std::string, std::string> metadata;
    bool flat = true;
    for (const auto& [k, v] : s.meta.items()) flat = flat && v.is_string() && k != kMetaKey;
    if (flat) {
      for (const auto& [k, v] : s.meta.items()) metadata[k] = v.get<std::string>();
    } else {
      metadata[kMetaKey] = s.meta.dump();
    }
    io::save_safetensors(out, s.tensors, metadata);
  } else {
    if (format != "safetensors") throw Error(path + ": convert --to kiln needs a safetensors file, this is " + format);
    if (out.empty()) out = replace_extension(path, ".kiln");
    const auto r = io::SafetensorsReader::open(path);
    State s;
    s.tensors = r.load({.zero_copy = true});
    if (auto it = r.metadata().find(kMetaKey); it != r.metadata().end() && r.metadata().size() == 1) {
      s.meta = Json::parse(it->second, nullptr, /*allow_exceptions=*/false);
      if (!s.meta.is_object()) throw Error(path + ": metadata '" + kMetaKey + "' is not a JSON object");
    } else {
      for (const auto& [k, v] : r.metadata()) s.meta[k] = v;
    }
    io::save(out, s);
  }
  std::printf("%s -> %s\n", path.c_str(), out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 3 || args[0] != "ckpt") {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string& command = args[1];
  const std::string& path = args[2];
  try {
    if (command == "inspect" && args.size() == 3) return inspect(path);
    if (command == "verify" && args.size() == 3) return verify(path);
    if (command == "convert") {
      std::string to, out;
      bool unknown_option = false;
      for (size_t i = 3; i + 1 < args.size(); i += 2) {
        if (args[i] == "--to") to = args[i + 1];
        else if (args[i] == "-o") out = args[i + 1];
        else unknown_option = true;
      }
      if (args.size() % 2 == 0 || to.empty() || unknown_option) {
        std::fputs(kUsage, stderr);
        return 2;
      }
      return convert(path, to, out);
    }
  } catch (const std::exception& e) {
    std::string line = e.what();
    for (char& c : line)
      if (c == '\n') c = ' ';
    std::fprintf(stderr, "kiln: %s\n", line.c_str());
    return 1;
  }
  std::fputs(kUsage, stderr);
  return 2;
}
