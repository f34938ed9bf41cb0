// What the file loggers share: the run folder (root/name/version_N, with Lightning's rule for the
// next free version), error-checked folder creation and whole-file writes, numbers printed as
// Python prints them (so CSV and YAML files read like Lightning's), and hparams.yaml in PyYAML's
// block layout.
#pragma once

#include <cstdint>
#include <string>

#include "train/loggers/logger.h"

namespace kiln {

// A resolved run folder.
struct RunFolder {
  std::string version;  // "3" for version_3, or the user's folder name
  std::string path;     // root/name/version_3 (root/version_3 when name is empty)
};

// The next free version under `versions_root`: one more than the largest N of the sub-folders
// named "version_N" (N all digits), or 0 when there are none or the folder does not exist.
int64_t next_version(const std::string& versions_root);
RunFolder resolve_run_folder(const std::string& root_dir, const std::string& name, const LoggerVersion& version);

// Creates a folder and its parents; `who` names the caller in the error.
void make_dirs(const std::string& path, const char* who);
// Writes `contents` to a temporary file next to `path` and renames it over `path`, so a reader
// never sees a half-written file.
void write_file_atomically(const std::string& path, const std::string& contents, const char* who);

// Python's repr(float): the shortest text that reads back to the same double, in fixed notation
// when the decimal exponent is in [-4, 16) ("0.0001", "123.0") and scientific otherwise ("1e-05",
// "1.5e+16"); "nan", "inf", "-inf".
std::string python_float_repr(double value);

// hparams.yaml as PyYAML's yaml.dump writes it: block style, keys sorted, two-space indent,
// sequences inside mappings not indented. `params` must be a JSON object.
std::string hparams_to_yaml(const Json& params);

}  // namespace kiln
