// The `kiln` command: `kiln ckpt inspect|verify|convert`. Inspect prints a checkpoint's metadata
// and tensor table; verify checks every checksum (or, for safetensors, which has none, the
// structure); convert turns a native file into safetensors and back, or keeps only a Trainer
// checkpoint's module weights (a safetensors tensor of a dtype Kiln lacks converts with --integers
// or --floats; inspect and verify read every dtype as is). Formats are told apart by content.
// Exit status: 0 good, 1 bad file (one line on stderr), 2 wrong usage (--help: 0, to stdout).
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "io/checkpoint/checkpoint.h"
#include "io/checkpoint/validate.h"
#include "io/safetensors/safetensors.h"
#include "train/arg_parser.h"

namespace {

using namespace kiln;

constexpr const char* kFileKinds =
    "FILE is a native Kiln checkpoint, a safetensors file or a sharded checkpoint folder\n"
    "(told by content).";
constexpr const char* kOverview =
    "Kiln's command-line tool. Exit status: 0 good, 1 bad file (one line on stderr), 2 wrong usage.\n"
    "  kiln ckpt inspect FILE\n"
    "  kiln ckpt verify FILE\n"
    "  kiln ckpt convert FILE --to safetensors|kiln [--weights-only] [-o OUT]\n"
    "                    [--integers int32|int64] [--floats float32|float64|bfloat16|float16]";

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
    r.verify_all();
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

// A Trainer checkpoint's module weights under the module's own names (`state_dict.` removed),
// with the hyperparameters: what someone sharing a model hands over, without the optimizer state,
// loop progress, RNG and callback state that only a resumed run needs.
State weights_only(const State& s, const std::string& path) {
  const std::string prefix = "state_dict.";
  State w;
  for (const auto& [name, t] : s.tensors)
    if (name.compare(0, prefix.size(), prefix) == 0) w.tensors.insert(name.substr(prefix.size()), t);
  if (w.tensors.size() == 0)
    throw Error(path + ": --weights-only keeps a Trainer checkpoint's module weights (tensors named state_dict.*); "
                       "this file has none");
  w.meta = {{"format", "kiln-weights"}};
  for (const char* key : {"kiln_version", "hyper_parameters"})
    if (s.meta.contains(key)) w.meta[key] = s.meta[key];
  return w;
}

State read_safetensors(const std::string& path, const io::SafetensorsConvert& convert) {
  const auto r = io::SafetensorsReader::open(path);
  State s;
  s.tensors = r.load({.zero_copy = true}, convert);
  if (auto it = r.metadata().find(kMetaKey); it != r.metadata().end() && r.metadata().size() == 1) {
    s.meta = Json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    if (!s.meta.is_object()) throw Error(path + ": metadata '" + kMetaKey + "' is not a JSON object");
  } else {
    for (const auto& [k, v] : r.metadata()) s.meta[k] = v;
  }
  return s;
}

void write_safetensors(const std::string& out, const State& s) {
  std::map<std::string, std::string> metadata;
  bool flat = true;
  for (const auto& [k, v] : s.meta.items()) flat = flat && v.is_string() && k != kMetaKey;
  if (flat) {
    for (const auto& [k, v] : s.meta.items()) metadata[k] = v.get<std::string>();
  } else {
    metadata[kMetaKey] = s.meta.dump();
  }
  io::save_safetensors(out, s.tensors, metadata);
}

// Without --weights-only, a file converts to the other format only; with it, to either.
int convert(const std::string& path, const std::string& to, std::string out, bool weights,
            const io::SafetensorsConvert& foreign) {
  const std::string format = io::detect_format(path);
  if (format != "kiln" && format != "safetensors")
    throw Error(path + ": convert needs a native Kiln checkpoint or a safetensors file, this is " + format);
  if (format == to && !weights)
    throw Error(path + ": this is already a " + (to == "kiln" ? "native Kiln checkpoint" : "safetensors file") +
                " (add --weights-only to keep only the module weights)");
  State s = format == "kiln" ? io::load(path, {.zero_copy = true}) : read_safetensors(path, foreign);
  if (weights) s = weights_only(s, path);
  const std::string extension = to == "kiln" ? ".kiln" : ".safetensors";
  if (out.empty()) out = replace_extension(path, weights ? ".weights" + extension : extension);
  if (out == path) throw Error(path + ": convert would overwrite its input; name another output with -o");
  if (to == "safetensors") write_safetensors(out, s);
  else io::save(out, s);
  std::printf("%s -> %s\n", path.c_str(), out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ArgParser top("kiln", kOverview);
  top.commands({{"ckpt", "inspect, verify or convert a checkpoint ('kiln ckpt --help')"}});
  if (auto code = top.parse(argc, argv)) return *code;
  ArgParser ckpt("kiln ckpt", kFileKinds);
  ckpt.commands({{"inspect", "print a checkpoint's metadata and tensor table"},
                 {"verify", "check every checksum (safetensors, which has none: the structure)"},
                 {"convert", "turn a native checkpoint into safetensors or back, or keep only its weights"}});
  if (auto code = ckpt.parse(top.rest(), std::cout, std::cerr)) return *code;

  const std::string& command = ckpt.command();
  std::string path, to, out, integers, floats;
  bool weights = false;
  ArgParser args("kiln ckpt " + command, kFileKinds);
  args.positional("FILE", path, "the checkpoint");
  if (command == "convert") {
    args.choice("--to", to, {"safetensors", "kiln"}, "the output format").required();
    args.option("-o", out, "OUT",
                "the output file (default: FILE with the output format's extension, .weights before it with "
                "--weights-only)");
    args.flag("--weights-only", weights,
              "keep only the module's weights (state_dict.*, renamed as the module names them) and its "
              "hyperparameters, not the optimizer and loop state a resumed run needs");
    args.choice("--integers", integers, {"int32", "int64"},
                "what a safetensors I8/I16/U16/U32/U64 tensor becomes (a value that does not fit is an error)");
    args.choice("--floats", floats, {"float32", "float64", "bfloat16", "float16"},
                "what a safetensors 8-bit float tensor becomes (a value it cannot hold exactly is an error)");
  }
  if (auto code = args.parse(ckpt.rest(), std::cout, std::cerr)) return *code;
  try {
    if (command == "inspect") return inspect(path);
    if (command == "verify") return verify(path);
    io::SafetensorsConvert foreign;
    if (!integers.empty()) foreign.integers = io::detail::dtype_from_name(integers);
    if (!floats.empty()) foreign.floats = io::detail::dtype_from_name(floats);
    return convert(path, to, out, weights, foreign);
  } catch (const std::exception& e) {
    std::string line = e.what();
    for (char& c : line)
      if (c == '\n') c = ' ';
    std::fprintf(stderr, "kiln: %s\n", line.c_str());
    return 1;
  }
}
