// Python-style number text and JSON scores for the built-in callbacks (see callback_util.h).
#include "train/callbacks/callback_util.h"

#include <chrono>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "tensor/error.h"
#include "train/trainer.h"

namespace kiln::callbacks {

std::string python_float_repr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  // The shortest round-trip digits, then Python's layout: fixed for exponents in [-4, 16), else
  // scientific with a signed exponent of at least two digits.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<size_t>(res.ptr - buf));
  const size_t e_pos = sci.find('e');
  const bool negative = sci[0] == '-';
  std::string digits;
  for (char c : sci.substr(negative ? 1 : 0, e_pos - (negative ? 1 : 0)))
    if (c != '.') digits += c;
  const int exponent = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      out += "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
    } else {
      const size_t int_digits = static_cast<size_t>(exponent) + 1;
      if (digits.size() <= int_digits) {
        out += digits + std::string(int_digits - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, int_digits) + "." + digits.substr(int_digits);
      }
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char exp_text[16];
  std::snprintf(exp_text, sizeof(exp_text), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out + exp_text;
}

namespace {

struct FormatSpec {
  char fill = ' ';
  char align = 0;  // '<' '>' '^' '=' or 0 (numbers: right)
  char sign = '-';
  bool zero = false;
  int width = 0;
  int precision = -1;
  char type = 0;
};

FormatSpec parse_spec(const std::string& spec) {
  FormatSpec f;
  size_t i = 0;
  auto is_align = [](char c) { return c == '<' || c == '>' || c == '^' || c == '='; };
  if (spec.size() >= 2 && is_align(spec[1])) {
    f.fill = spec[0], f.align = spec[1], i = 2;
  } else if (!spec.empty() && is_align(spec[0])) {
    f.align = spec[0], i = 1;
  }
  if (i < spec.size() && (spec[i] == '+' || spec[i] == '-' || spec[i] == ' ')) f.sign = spec[i++];
  if (i < spec.size() && spec[i] == '0') f.zero = true, ++i;
  while (i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i]))) f.width = f.width * 10 + (spec[i++] - '0');
  if (i < spec.size() && spec[i] == '.') {
    ++i;
    KILN_CHECK(i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i])), "format spec '", spec,
               "': expected digits after '.'");
    f.precision = 0;
    while (i < spec.size() && std::isdigit(static_cast<unsigned char>(spec[i])))
      f.precision = f.precision * 10 + (spec[i++] - '0');
  }
  if (i < spec.size()) f.type = spec[i++];
  KILN_CHECK(i == spec.size() && (f.type == 0 || std::string_view("deEfFgG%").find(f.type) != std::string_view::npos),
             "format spec '", spec, "' is not supported (use [[fill]align][sign][0][width][.precision][type] with type "
             "one of d e E f F g G %)");
  return f;
}

// The digits of |v| without sign or padding.
std::string format_magnitude(double v, const FormatSpec& f, bool is_integer, const std::string& spec) {
  if (std::isnan(v)) return f.type && std::isupper(static_cast<unsigned char>(f.type)) ? "NAN" : "nan";
  if (std::isinf(v)) return f.type && std::isupper(static_cast<unsigned char>(f.type)) ? "INF" : "inf";
  char buf[512];
  if (f.type == 'd' || (f.type == 0 && is_integer)) {
    KILN_CHECK(is_integer, "format spec '", spec, "': 'd' needs an integer value, got ", python_float_repr(v));
    KILN_CHECK(f.precision < 0, "format spec '", spec, "': precision is not allowed with integers");
    std::snprintf(buf, sizeof(buf), "%.0f", v);
    return buf;
  }
  if (f.type == '%') {
    std::snprintf(buf, sizeof(buf), "%.*f", f.precision < 0 ? 6 : f.precision, v * 100);
    return std::string(buf) + "%";
  }
  if (f.type == 0) {
    if (f.precision < 0) return python_float_repr(v);
    // Like 'g', but a fixed-point result keeps at least one digit after the point (Python).
    std::snprintf(buf, sizeof(buf), "%.*g", f.precision == 0 ? 1 : f.precision, v);
    std::string out = buf;
    if (out.find_first_of(".e") == std::string::npos) out += ".0";
    return out;
  }
  const char fmt[] = {'%', '.', '*', f.type, '\0'};
  std::snprintf(buf, sizeof(buf), fmt, f.precision < 0 ? 6 : f.precision, v);
  return buf;
}

}  // namespace

std::string python_format(double v, const std::string& spec, bool is_integer) {
  const FormatSpec f = parse_spec(spec);
  std::string body = format_magnitude(std::fabs(v), f, is_integer, spec);
  std::string sign;
  if (std::signbit(v) && !std::isnan(v)) sign = "-";
  else if (f.sign == '+') sign = "+";
  else if (f.sign == ' ') sign = " ";
  const size_t len = sign.size() + body.size();
  if (static_cast<size_t>(f.width) <= len) return sign + body;
  const size_t pad = static_cast<size_t>(f.width) - len;
  char align = f.align, fill = f.fill;
  if (f.zero && align == 0) align = '=', fill = '0';
  if (align == 0) align = '>';
  switch (align) {
    case '<': return sign + body + std::string(pad, fill);
    case '^': return std::string(pad / 2, fill) + sign + body + std::string(pad - pad / 2, fill);
    case '=': return sign + std::string(pad, fill) + body;
    default: return std::string(pad, fill) + sign + body;
  }
}

Json score_to_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

double score_from_json(const Json& j, const char* what) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    const std::string s = j.get<std::string>();
    if (s == "inf") return INFINITY;
    if (s == "-inf") return -INFINITY;
    if (s == "nan") return NAN;
  }
  KILN_CHECK(false, what, ": expected a number (or \"inf\", \"-inf\", \"nan\"), got ", j.dump());
  return 0;
}

std::string python_key_list(const Metrics& metrics) {
  std::string out = "[";
  for (const auto& [name, value] : metrics) out += (out.size() > 1 ? ", '" : "'") + name + "'";
  return out + "]";
}

bool validates_once_per_epoch(const Trainer& trainer) {
  const TrainerConfig& cfg = trainer.config();
  const auto* fraction = std::get_if<double>(&cfg.val_check_interval);
  return fraction && *fraction == 1.0 && cfg.check_val_every_n_epoch == 1;
}

double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace kiln::callbacks
