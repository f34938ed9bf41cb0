// kiln::ArgParser (train/arg_parser.h): binds flags to variables, prints --help, and turns bad
// input into one message naming the flag and the value.
#include "train/arg_parser.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <iostream>
#include <sstream>

namespace kiln {
namespace {

std::string with_default(std::string help, const std::string& value) {
  if (!value.empty()) help += (help.empty() ? "(default: " : " (default: ") + value + ")";
  return help;
}

std::string joined(const std::vector<std::string>& items, const std::string& sep) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) s += (i ? sep : "") + items[i];
  return s;
}

constexpr size_t kHelpColumns = 80;

// `text` broken at spaces into lines of at most `columns` (a longer word gets a line of its own),
// every line after the first starting with `indent`.
std::string wrapped(const std::string& text, size_t columns, const std::string& indent) {
  std::string out, word;
  size_t line = 0;
  std::istringstream words(text);
  while (words >> word) {
    if (line > 0 && line + 1 + word.size() > columns) {
      out += "\n" + indent;
      line = 0;
    }
    out += (line > 0 ? " " : "") + word;
    line += (line > 0 ? 1 : 0) + word.size();
  }
  return out;
}

std::string integer_kind(int64_t min) {
  if (min == 1) return "a positive integer";
  if (min == 0) return "a non-negative integer";
  return "an integer >= " + std::to_string(min);
}

}  // namespace

ArgParser::ArgParser(std::string program, std::string description)
    : program_(std::move(program)), description_(std::move(description)) {}

ArgParser& ArgParser::add(Flag f) {
  KILN_ASSERT(f.name.rfind("-", 0) == 0 && f.name != "-h" && f.name != "--help" && !find(f.name),
              "ArgParser: bad or repeated flag name ", f.name);
  flags_.push_back(std::move(f));
  return *this;
}

ArgParser& ArgParser::flag(const std::string& name, bool& target, std::string help) {
  return add({name, "", std::move(help), false, [&target](const std::string&) { target = true; }});
}

ArgParser& ArgParser::option(const std::string& name, std::string& target, std::string metavar, std::string help) {
  return add({name, std::move(metavar), with_default(std::move(help), target),
              true, [&target](const std::string& v) { target = v; }});
}

ArgParser& ArgParser::choice(const std::string& name, std::string& target, const std::vector<std::string>& choices,
                             std::string help) {
  return add({name, joined(choices, "|"), with_default(std::move(help), target), true,
              [&target, choices, name](const std::string& v) {
                if (std::find(choices.begin(), choices.end(), v) == choices.end())
                  throw ArgError(name + " expects one of " + joined(choices, ", ") + "; got '" + v + "'");
                target = v;
              }});
}

ArgParser& ArgParser::option(const std::string& name, int64_t& target, std::string metavar, std::string help,
                             int64_t min) {
  return add({name, std::move(metavar), with_default(std::move(help), std::to_string(target)), true,
              [&target, name, min](const std::string& v) { target = parse_integer(name, v, min); }});
}

ArgParser& ArgParser::option(const std::string& name, int& target, std::string metavar, std::string help,
                             int64_t min) {
  return add({name, std::move(metavar), with_default(std::move(help), std::to_string(target)), true,
              [&target, name, min](const std::string& v) {
                const int64_t value = parse_integer(name, v, min);
                if (value > INT_MAX) throw ArgError(name + " expects an integer up to " + std::to_string(INT_MAX) +
                                                    ", got '" + v + "'");
                target = static_cast<int>(value);
              }});
}

ArgParser& ArgParser::option(const std::string& name, std::optional<int64_t>& target, std::string metavar,
                             std::string help, int64_t min) {
  return add({name, std::move(metavar), with_default(std::move(help), target ? std::to_string(*target) : ""), true,
              [&target, name, min](const std::string& v) { target = parse_integer(name, v, min); }});
}

ArgParser& ArgParser::option(const std::string& name, std::string metavar, std::string help,
                             std::function<void(const std::string&)> set) {
  return add({name, std::move(metavar), std::move(help), true, std::move(set)});
}

ArgParser& ArgParser::required() {
  KILN_ASSERT(!flags_.empty() && flags_.back().takes_value, "ArgParser: required() follows a flag that takes a value");
  flags_.back().required = true;
  return *this;
}

ArgParser& ArgParser::positional(std::string metavar, std::string& target, std::string help) {
  KILN_ASSERT(commands_.empty() && !remainder_, "ArgParser: a parser takes positionals or commands, not both");
  positionals_.push_back({std::move(metavar), std::move(help), &target});
  return *this;
}

ArgParser& ArgParser::commands(std::vector<std::pair<std::string, std::string>> name_and_help) {
  KILN_ASSERT(positionals_.empty() && !remainder_, "ArgParser: a parser takes positionals or commands, not both");
  commands_ = std::move(name_and_help);
  return *this;
}

ArgParser& ArgParser::remainder(std::string metavar, std::vector<std::string>& target, std::string help) {
  KILN_ASSERT(commands_.empty() && positionals_.empty(), "ArgParser: a remainder excludes positionals and commands");
  remainder_ = &target;
  remainder_metavar_ = std::move(metavar);
  remainder_help_ = std::move(help);
  return *this;
}

ArgParser& ArgParser::ignore_prefix(std::string prefix) {
  ignored_prefixes_.push_back(std::move(prefix));
  return *this;
}

int64_t ArgParser::parse_integer(const std::string& flag, const std::string& text, int64_t min) {
  int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || ptr != end || value < min)
    throw ArgError(flag + " expects " + integer_kind(min) + ", got '" + text + "'");
  return value;
}

ArgParser::Flag* ArgParser::find(const std::string& name) {
  for (Flag& f : flags_)
    if (f.name == name) return &f;
  return nullptr;
}

std::string ArgParser::valid_flags() const {
  std::vector<std::string> names;
  for (const Flag& f : flags_) names.push_back(f.name);
  names.push_back("--help");
  return joined(names, ", ");
}

bool ArgParser::parse_or_throw(const std::vector<std::string>& args) {
  // --help wins over any bad flag before it; a command's own arguments belong to the command, and
  // the remainder's to its program.
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") return false;
    if (std::any_of(commands_.begin(), commands_.end(), [&](const auto& c) { return c.first == a; })) break;
    if (remainder_ && (a == "--" || a.size() <= 1 || a[0] != '-')) break;
    if (const Flag* f = find(a); remainder_ && f && f->takes_value) ++i;  // its value may look like a program
  }
  for (Flag& f : flags_) f.seen = false;
  command_.clear();
  rest_.clear();
  if (remainder_) remainder_->clear();
  size_t next_positional = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (remainder_ && (a == "--" || a.size() <= 1 || a[0] != '-')) {
      remainder_->assign(args.begin() + static_cast<std::ptrdiff_t>(i + (a == "--" ? 1 : 0)), args.end());
      break;
    }
    if (a.size() > 1 && a[0] == '-') {
      if (std::any_of(ignored_prefixes_.begin(), ignored_prefixes_.end(),
                      [&](const std::string& p) { return a.rfind(p, 0) == 0; }))
        continue;
      const size_t eq = a.rfind("--", 0) == 0 ? a.find('=') : std::string::npos;
      const std::string name = a.substr(0, eq);
      Flag* f = find(name);
      if (!f) throw ArgError("unknown flag " + name + " (valid: " + valid_flags() + ")");
      if (!f->takes_value) {
        if (eq != std::string::npos) throw ArgError(name + " takes no value, got '" + a.substr(eq + 1) + "'");
        f->set("");
        continue;
      }
      if (eq == std::string::npos && i + 1 == args.size())
        throw ArgError(name + " expects a value: " + name + " " + f->metavar);
      f->set(eq == std::string::npos ? args[++i] : a.substr(eq + 1));
      f->seen = true;
    } else if (!commands_.empty()) {
      std::vector<std::string> names;
      for (const auto& c : commands_) names.push_back(c.first);
      if (std::find(names.begin(), names.end(), a) == names.end())
        throw ArgError("unknown command '" + a + "' (valid: " + joined(names, ", ") + ")");
      command_ = a;
      rest_.assign(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
      return true;
    } else {
      if (next_positional == positionals_.size()) throw ArgError("unexpected argument '" + a + "'");
      *positionals_[next_positional++].target = a;
    }
  }
  if (!commands_.empty()) {
    std::vector<std::string> names;
    for (const auto& c : commands_) names.push_back(c.first);
    throw ArgError("missing command (valid: " + joined(names, ", ") + ")");
  }
  for (const Flag& f : flags_)
    if (f.required && !f.seen) throw ArgError("missing " + f.name + " " + f.metavar);
  if (next_positional < positionals_.size()) throw ArgError("missing " + positionals_[next_positional].metavar);
  if (remainder_ && remainder_->empty()) throw ArgError("missing " + remainder_metavar_);
  return true;
}

std::optional<int> ArgParser::parse(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  try {
    if (parse_or_throw(args)) return std::nullopt;
    out << help();
    return 0;
  } catch (const ArgError& e) {
    err << program_ << ": " << e.what() << "\n" << "run '" << program_ << " --help' for usage\n";
    return 2;
  }
}

std::optional<int> ArgParser::parse(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  return parse(std::vector<std::string>(argv + std::min(argc, 1), argv + argc), out, err);
}

std::optional<int> ArgParser::parse(int argc, const char* const* argv) {
  return parse(argc, argv, std::cout, std::cerr);
}

std::string ArgParser::help() const {
  std::ostringstream os;
  os << "usage: " << program_ << (flags_.empty() ? "" : " [flags]");
  for (const Positional& p : positionals_) os << " " << p.metavar;
  if (remainder_) os << " " << remainder_metavar_;
  if (!commands_.empty()) os << " COMMAND [ARGS]";
  os << "\n";
  if (!description_.empty()) os << description_ << "\n";

  std::vector<std::pair<std::string, std::string>> rows;  // (left column, help)
  auto section = [&](const std::string& title) {
    if (rows.empty()) return;
    size_t width = 0;
    for (const auto& r : rows) width = std::max(width, r.first.size());
    width = std::min<size_t>(width, 26);
    os << "\n" << title << ":\n";
    const std::string indent(width + 4, ' ');
    for (const auto& [left, text] : rows) {
      os << "  " << left;
      if (left.size() > width) os << "\n" << indent;
      else os << std::string(width - left.size() + 2, ' ');
      os << wrapped(text, kHelpColumns - indent.size(), indent) << "\n";
    }
    rows.clear();
  };
  for (const Positional& p : positionals_) rows.emplace_back(p.metavar, p.help);
  if (remainder_) rows.emplace_back(remainder_metavar_, remainder_help_);
  section("arguments");
  for (const auto& [name, text] : commands_) rows.emplace_back(name, text);
  section("commands");
  for (const Flag& f : flags_) rows.emplace_back(f.name + (f.takes_value ? " " + f.metavar : ""), f.help);
  rows.emplace_back("-h, --help", "print this help and exit");
  section("flags");
  if (!commands_.empty()) os << "\nrun '" << program_ << " COMMAND --help' for a command's flags\n";
  return os.str();
}

}  // namespace kiln
