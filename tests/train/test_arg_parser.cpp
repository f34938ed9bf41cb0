// kiln::ArgParser (train/arg_parser.h): flags bind their variables in both spellings, defaults
// stay when a flag is absent, bad input becomes one message naming the flag and the value, --help
// goes to the output stream with exit 0 and wins over bad flags, commands hand their arguments on.
#include <gtest/gtest.h>

#include <sstream>

#include "testing.h"
#include "train/arg_parser.h"

using namespace kiln;

namespace {

// The ArgError message of parsing `args`, or "" if they parsed.
std::string error_of(ArgParser& p, const std::vector<std::string>& args) {
  try {
    p.parse_or_throw(args);
  } catch (const ArgError& e) {
    return e.what();
  }
  return "";
}

struct Flags {
  int64_t epochs = 3;
  int threads = 2;
  std::optional<int64_t> limit;
  std::string root = "runs/demo", model = "all", resume;
  bool verbose = false;
  ArgParser parser{"prog", "Does a thing."};
  Flags() {
    parser.option("--epochs", epochs, "N", "epochs to train", 1)
        .option("--threads", threads, "N", "threads", 1)
        .option("--limit-batches", limit, "N", "batches per epoch (default: all)", 1)
        .option("--root", root, "DIR", "where runs go")
        .choice("--model", model, {"mlp", "cnn", "all"}, "which model")
        .option("--resume", resume, "PATH", "a checkpoint")
        .flag("--verbose", verbose, "say more");
  }
};

}  // namespace

TEST(ArgParser, DefaultsStayWhenFlagsAreAbsent) {
  Flags f;
  EXPECT_TRUE(f.parser.parse_or_throw({}));
  EXPECT_EQ(f.epochs, 3);
  EXPECT_EQ(f.threads, 2);
  EXPECT_FALSE(f.limit.has_value());
  EXPECT_EQ(f.root, "runs/demo");
  EXPECT_EQ(f.model, "all");
  EXPECT_EQ(f.resume, "");
  EXPECT_FALSE(f.verbose);
}

TEST(ArgParser, BindsBothSpellingsAndTheLastRepeatWins) {
  Flags f;
  EXPECT_TRUE(f.parser.parse_or_throw({"--epochs", "7", "--threads=4", "--limit-batches", "12", "--root=a=b",
                                       "--model", "cnn", "--verbose", "--resume", "-x.ckpt", "--epochs=9"}));
  EXPECT_EQ(f.epochs, 9);
  EXPECT_EQ(f.threads, 4);
  EXPECT_EQ(f.limit, 12);
  EXPECT_EQ(f.root, "a=b");  // split at the first '=' only
  EXPECT_EQ(f.model, "cnn");
  EXPECT_EQ(f.resume, "-x.ckpt");  // a value may start with '-'
  EXPECT_TRUE(f.verbose);
}

TEST(ArgParser, BadValuesNameTheFlagAndTheValue) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--epochs", "abc"}, "--epochs expects a positive integer, got 'abc'"},
      {{"--epochs", "0"}, "--epochs expects a positive integer, got '0'"},
      {{"--epochs", "-1"}, "--epochs expects a positive integer, got '-1'"},
      {{"--epochs", "3x"}, "--epochs expects a positive integer, got '3x'"},
      {{"--epochs="}, "--epochs expects a positive integer, got ''"},
      {{"--epochs", "99999999999999999999"}, "--epochs expects a positive integer, got '99999999999999999999'"},
      {{"--threads", "4294967296"}, "--threads expects an integer up to 2147483647, got '4294967296'"},
      {{"--limit-batches", "0"}, "--limit-batches expects a positive integer, got '0'"},
      {{"--model", "rnn"}, "--model expects one of mlp, cnn, all; got 'rnn'"},
      {{"--epochs"}, "--epochs expects a value: --epochs N"},
      {{"--verbose=yes"}, "--verbose takes no value, got 'yes'"},
      {{"--epoch", "3"}, "unknown flag --epoch (valid: --epochs, --threads, --limit-batches, --root, --model, "
                         "--resume, --verbose, --help)"},
      {{"stray"}, "unexpected argument 'stray'"},
  };
  for (const auto& [args, message] : cases) {
    Flags f;
    EXPECT_EQ(error_of(f.parser, args), message) << args[0];
  }
  EXPECT_EQ(ArgParser::parse_integer("--warmup", "0", 0), 0);
  Flags f;
  EXPECT_EQ(error_of(f.parser, {"--epochs", "abc"}), "--epochs expects a positive integer, got 'abc'");
  EXPECT_EQ(f.epochs, 3);  // a rejected value leaves the default
}

TEST(ArgParser, ParsePrintsHelpToOutAndErrorsToErr) {
  Flags f;
  std::ostringstream out, err;
  const std::vector<std::string> bad = {"--epochs", "abc"};
  EXPECT_EQ(f.parser.parse(bad, out, err), 2);
  EXPECT_EQ(out.str(), "");
  EXPECT_EQ(err.str(), "prog: --epochs expects a positive integer, got 'abc'\nrun 'prog --help' for usage\n");

  for (const char* help : {"--help", "-h"}) {
    Flags g;
    std::ostringstream out2, err2;
    const std::vector<std::string> args = {"--epochs", "abc", help};  // --help wins over a bad flag before it
    EXPECT_EQ(g.parser.parse(args, out2, err2), 0);
    EXPECT_EQ(err2.str(), "");
    EXPECT_EQ(out2.str(), g.parser.help());
  }
  const char* argv[] = {"prog", "--epochs", "5"};
  EXPECT_EQ(f.parser.parse(3, argv, out, err), std::nullopt);
  EXPECT_EQ(f.epochs, 5);
}

TEST(ArgParser, HelpListsEveryFlagWithItsDefault) {
  Flags f;
  const std::string help = f.parser.help();
  EXPECT_EQ(help.rfind("usage: prog [flags]\nDoes a thing.\n\nflags:\n", 0), 0u) << help;
  for (const char* line : {"  --epochs N", "epochs to train (default: 3)\n", "  --limit-batches N",
                           "batches per epoch (default: all)\n", "where runs go (default: runs/demo)\n",
                           "  --model mlp|cnn|all", "which model (default: all)\n", "a checkpoint\n",
                           "  --verbose", "  -h, --help", "print this help and exit\n"})
    EXPECT_NE(help.find(line), std::string::npos) << line << "\n" << help;
  EXPECT_EQ(help.find("a checkpoint (default"), std::string::npos);  // an empty default is not shown
}

TEST(ArgParser, PositionalsRequiredFlagsAndIgnoredPrefixes) {
  std::string file, to;
  ArgParser p("tool convert", "");
  p.positional("FILE", file, "input").choice("--to", to, {"a", "b"}, "format").required().ignore_prefix("--benchmark_");
  EXPECT_EQ(error_of(p, {"--to", "a"}), "missing FILE");
  EXPECT_EQ(error_of(p, {"x"}), "missing --to a|b");
  EXPECT_EQ(error_of(p, {"x", "y", "--to", "a"}), "unexpected argument 'y'");
  EXPECT_TRUE(p.parse_or_throw({"--benchmark_min_time=0.1", "in.ckpt", "--to=b"}));
  EXPECT_EQ(file, "in.ckpt");
  EXPECT_EQ(to, "b");
  EXPECT_NE(p.help().find("usage: tool convert [flags] FILE\n"), std::string::npos) << p.help();
}

TEST(ArgParser, CommandsStopParsingAndKeepTheRest) {
  bool quiet = false;
  ArgParser p("kiln ckpt", "");
  p.flag("--quiet", quiet, "").commands({{"inspect", "show"}, {"verify", "check"}});
  EXPECT_TRUE(p.parse_or_throw({"--quiet", "verify", "f.kiln", "--help", "--quiet"}));
  EXPECT_TRUE(quiet);
  EXPECT_EQ(p.command(), "verify");
  EXPECT_EQ(p.rest(), (std::vector<std::string>{"f.kiln", "--help", "--quiet"}));  // the command's --help

  ArgParser q("kiln ckpt", "");
  q.commands({{"inspect", "show"}, {"verify", "check"}});
  EXPECT_EQ(error_of(q, {"frobnicate"}), "unknown command 'frobnicate' (valid: inspect, verify)");
  EXPECT_EQ(error_of(q, {}), "missing command (valid: inspect, verify)");
  EXPECT_FALSE(q.parse_or_throw({"--help", "inspect"}));
  const std::string help = q.help();
  EXPECT_NE(help.find("usage: kiln ckpt COMMAND [ARGS]\n"), std::string::npos) << help;
  EXPECT_NE(help.find("commands:\n  inspect  show\n  verify   check\n"), std::string::npos) << help;
}
