// kiln::ArgParser: the command-line flags of Kiln's own programs (the demo, the benchmarks, the
// `kiln` tool). Each flag binds a variable whose value at registration is the default that --help
// shows; bad input is an ArgError naming the flag and the value. Library-internal and not in
// kiln.h: it is not the LightningCLI-like front end for user programs (that is a separate API).
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tensor/error.h"

namespace kiln {

// A bad command line: the message names the flag and the value ("--epochs expects a positive
// integer, got 'abc'"), without the program's name.
class ArgError : public Error {
 public:
  using Error::Error;
};

class ArgParser {
 public:
  // `program` heads every message ("kiln ckpt convert"); `description` follows the usage line.
  ArgParser(std::string program, std::string description);

  // A flag without a value: present sets `target` to true.
  ArgParser& flag(const std::string& name, bool& target, std::string help);
  // A flag with a value, `--name VALUE` or `--name=VALUE`. `metavar` names the value in --help.
  ArgParser& option(const std::string& name, std::string& target, std::string metavar, std::string help);
  // A value that must be one of `choices`.
  ArgParser& choice(const std::string& name, std::string& target, const std::vector<std::string>& choices,
                    std::string help);
  // An integer of at least `min`.
  ArgParser& option(const std::string& name, int64_t& target, std::string metavar, std::string help, int64_t min);
  ArgParser& option(const std::string& name, int& target, std::string metavar, std::string help, int64_t min);
  // As above, left empty when the flag is not given.
  ArgParser& option(const std::string& name, std::optional<int64_t>& target, std::string metavar, std::string help,
                    int64_t min);
  // Any other value: `set` receives the text and throws ArgError when it is bad.
  ArgParser& option(const std::string& name, std::string metavar, std::string help,
                    std::function<void(const std::string&)> set);
  // The flag registered last must be given.
  ArgParser& required();
  // A required positional argument, in order of registration.
  ArgParser& positional(std::string metavar, std::string& target, std::string help);
  // The first positional argument names one of these commands; parsing stops there, and the
  // command's own arguments are left in rest() for its own parser.
  ArgParser& commands(std::vector<std::pair<std::string, std::string>> name_and_help);
  // A program and its own arguments, as a launcher takes them (kiln-run): everything from the first
  // argument that is not a flag (or after "--") on, flags like --help included. Required.
  ArgParser& remainder(std::string metavar, std::vector<std::string>& target, std::string help);
  // Flags starting with `prefix` are accepted and skipped (bench/run.sh passes Google Benchmark's
  // --benchmark_min_time=T to every bench_* program, including those that do not use the library).
  ArgParser& ignore_prefix(std::string prefix);

  // Binds the arguments (argv without the program) to the variables; throws ArgError on bad input.
  // Returns false, binding nothing further, when -h or --help is among them.
  bool parse_or_throw(const std::vector<std::string>& args);
  // What a program's main calls: nullopt to go on; 0 after printing help() to `out` for --help;
  // 2 after printing "program: message" and a hint to `err` for bad input.
  std::optional<int> parse(int argc, const char* const* argv, std::ostream& out, std::ostream& err);
  std::optional<int> parse(int argc, const char* const* argv);  // to stdout and stderr
  std::optional<int> parse(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

  std::string help() const;
  const std::string& program() const { return program_; }
  const std::string& command() const { return command_; }        // after parse, with commands()
  const std::vector<std::string>& rest() const { return rest_; }  // the arguments after command()

  // `text` as an integer of at least `min`, or an ArgError naming `flag`.
  static int64_t parse_integer(const std::string& flag, const std::string& text, int64_t min);

 private:
  struct Flag {
    std::string name, metavar, help;
    bool takes_value = true;
    std::function<void(const std::string&)> set;
    bool required = false, seen = false;
  };
  struct Positional {
    std::string metavar, help;
    std::string* target;
  };

  ArgParser& add(Flag f);
  Flag* find(const std::string& name);
  std::string valid_flags() const;

  std::string program_, description_;
  std::vector<Flag> flags_;
  std::vector<Positional> positionals_;
  std::vector<std::string>* remainder_ = nullptr;
  std::string remainder_metavar_, remainder_help_;
  std::vector<std::pair<std::string, std::string>> commands_;
  std::vector<std::string> ignored_prefixes_;
  std::string command_;
  std::vector<std::string> rest_;
};

}  // namespace kiln
