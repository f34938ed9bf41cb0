// Run folders, atomic writes, Python-style numbers and hparams.yaml for the file loggers.
#include "train/loggers/log_files.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "tensor/error.h"

namespace kiln {
namespace fs = std::filesystem;

int64_t next_version(const std::string& versions_root) {
  std::error_code ec;
  if (!fs::is_directory(versions_root, ec)) return 0;
  int64_t largest = -1;
  for (fs::directory_iterator it(versions_root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string folder = it->path().filename().string();
    std::error_code kind_ec;
    if (folder.rfind("version_", 0) != 0 || !it->is_directory(kind_ec)) continue;
    // Lightning takes the text between the first and second '_' ("version_3_old" counts as 3).
    const std::string digits = folder.substr(8, folder.find('_', 8) == std::string::npos ? std::string::npos : folder.find('_', 8) - 8);
    int64_t n = -1;
    const auto [end_ptr, parse_ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (digits.empty() || parse_ec != std::errc() || end_ptr != digits.data() + digits.size()) continue;
    largest = std::max(largest, n);
  }
  KILN_CHECK(!ec, "logger: cannot list '", versions_root, "' to find the next version: ", ec.message());
  return largest + 1;
}

RunFolder resolve_run_folder(const std::string& root_dir, const std::string& name, const LoggerVersion& version) {
  const fs::path versions_root = name.empty() ? fs::path(root_dir) : fs::path(root_dir) / name;
  RunFolder run;
  std::string folder;
  if (const auto* text = std::get_if<std::string>(&version)) {
    KILN_CHECK(!text->empty(), "logger: the version folder name must not be empty (leave the version unset for version_N)");
    run.version = folder = *text;
  } else {
    const int64_t n = std::holds_alternative<int64_t>(version) ? std::get<int64_t>(version) : next_version(versions_root.string());
    KILN_CHECK(n >= 0, "logger: version must be >= 0, got ", n);
    run.version = std::to_string(n);
    folder = "version_" + run.version;
  }
  run.path = (versions_root / folder).string();
  return run;
}

void make_dirs(const std::string& path, const char* who) {
  std::error_code ec;
  fs::create_directories(path, ec);
  KILN_CHECK(!ec && fs::is_directory(path), who, ": cannot create folder '", path, "': ",
             ec ? ec.message() : std::string("a file of that name exists"));
}

void write_file_atomically(const std::string& path, const std::string& contents, const char* who) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  KILN_CHECK(f != nullptr, who, ": cannot create '", tmp, "': ", std::strerror(errno));
  const size_t written = std::fwrite(contents.data(), 1, contents.size(), f);
  const bool flushed = std::fflush(f) == 0;
  const int write_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (written != contents.size() || !flushed || !closed) {
    std::remove(tmp.c_str());
    KILN_CHECK(false, who, ": cannot write '", tmp, "': ", std::strerror(write_errno), " (", written, " of ",
               contents.size(), " bytes written)");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    std::remove(tmp.c_str());
    KILN_CHECK(false, who, ": cannot rename '", tmp, "' to '", path, "': ", std::strerror(rename_errno));
  }
}

std::string python_float_repr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[64];
  // Shortest round-trip digits, as "d.ddde±XX".
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  KILN_ASSERT(ec == std::errc());
  const std::string text(buf, end);
  const size_t e = text.find('e');
  const bool negative = text[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i)
    if (text[i] != '.') digits.push_back(text[i]);
  const int exponent = std::stoi(text.substr(e + 1));
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out.append("0.").append(static_cast<size_t>(-exponent - 1), '0').append(digits);
    } else {
      const size_t int_len = static_cast<size_t>(exponent) + 1;
      if (digits.size() < int_len) digits.append(int_len - digits.size(), '0');
      const std::string frac = digits.substr(int_len);
      out += digits.substr(0, int_len) + "." + (frac.empty() ? "0" : frac);
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out.append(".").append(digits, 1);
    const int magnitude = std::abs(exponent);
    out += std::string("e") + (exponent < 0 ? "-" : "+") + (magnitude < 10 ? "0" : "") + std::to_string(magnitude);
  }
  return out;
}

namespace {

// Plain (unquoted) only when PyYAML could not read the text back as anything but this string:
// no indicator characters, no leading digit/sign/dot (numbers, dates, .inf) and no YAML 1.1
// bool/null word. Anything else is quoted, which loads back to the same string.
bool yaml_plain_ok(const std::string& s) {
  static const char* const kReserved[] = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
                                          "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON",
                                          "off", "Off", "OFF", "null", "Null", "NULL", "~"};
  if (s.empty() || s.back() == ' ') return false;
  const unsigned char first = static_cast<unsigned char>(s[0]);
  if (!(std::isalpha(first) || first == '_' || first == '/')) return false;
  for (const char* word : kReserved)
    if (s == word) return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '_' || c == '.' || c == '/' || c == '-' || c == ' ')) return false;
  return true;
}

std::string yaml_string(const std::string& s) {
  if (yaml_plain_ok(s)) return s;
  bool needs_escapes = false;
  for (unsigned char c : s) needs_escapes |= (c < 0x20 || c == 0x7F);
  if (!needs_escapes) {  // single quotes: no escapes, only '' for '
    std::string out = "'";
    for (char c : s) out += (c == '\'') ? std::string("''") : std::string(1, c);
    return out + "'";
  }
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\x%02X", c);
          out += hex;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out + "\"";
}

// PyYAML's float: repr(), lower-cased, with ".0" put before an exponent that has no dot.
std::string yaml_float(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  std::string text = python_float_repr(v);
  const size_t e = text.find('e');
  if (e != std::string::npos && text.find('.') == std::string::npos) text.insert(e, ".0");
  return text;
}

std::string yaml_scalar(const Json& v) {
  switch (v.type()) {
    case Json::value_t::null: return "null";
    case Json::value_t::boolean: return v.get<bool>() ? "true" : "false";
    case Json::value_t::number_integer: return std::to_string(v.get<int64_t>());
    case Json::value_t::number_unsigned: return std::to_string(v.get<uint64_t>());
    case Json::value_t::number_float: return yaml_float(v.get<double>());
    case Json::value_t::string: return yaml_string(v.get<std::string>());
    case Json::value_t::object: return "{}";  // only reached when empty
    case Json::value_t::array: return "[]";
    default: KILN_CHECK(false, "hparams.yaml: cannot write a JSON value of type ", v.type_name());
  }
  return "";
}

bool is_block(const Json& v) { return (v.is_object() || v.is_array()) && !v.empty(); }

void emit_sequence(const Json& seq, size_t indent, bool first_inline, std::string& out);

// A mapping at `indent`; the first key follows what is already on the line when first_inline
// (a mapping inside a sequence item: "- a: 1").
void emit_mapping(const Json& map, size_t indent, bool first_inline, std::string& out) {
  bool first = true;
  for (const auto& [key, value] : map.items()) {
    if (!(first && first_inline)) out.append(indent, ' ');
    first = false;
    out += yaml_string(key) + ":";
    if (value.is_object() && !value.empty()) {
      out += "\n";
      emit_mapping(value, indent + 2, false, out);
    } else if (value.is_array() && !value.empty()) {
      out += "\n";
      emit_sequence(value, indent, false, out);  // PyYAML does not indent a sequence under its key
    } else {
      out.append(" ").append(yaml_scalar(value)).append("\n");
    }
  }
}

void emit_sequence(const Json& seq, size_t indent, bool first_inline, std::string& out) {
  bool first = true;
  for (const Json& item : seq) {
    if (!(first && first_inline)) out.append(indent, ' ');
    first = false;
    out += "- ";
    if (item.is_object() && is_block(item)) emit_mapping(item, indent + 2, true, out);
    else if (item.is_array() && is_block(item)) emit_sequence(item, indent + 2, true, out);
    else out += yaml_scalar(item) + "\n";
  }
}

}  // namespace

std::string hparams_to_yaml(const Json& params) {
  KILN_CHECK(params.is_object(), "hparams.yaml: expected a JSON object of hyperparameters, got ", params.type_name());
  if (params.empty()) return "{}\n";
  std::string out;
  emit_mapping(params, 0, false, out);
  return out;
}

}  // namespace kiln
