// The `kiln ckpt` command (tools/kiln_cli.cpp): exit 0 on good files of either format, 1 with one
// line on stderr on bad ones, 2 on wrong usage; convert round-trips losslessly. Runs the built
// executable (<build>/kiln, found above this test's folder); skipped if it was not built.
#include <sys/wait.h>
#include <unistd.h>

#include <climits>

#include "ckpt_helpers.h"

namespace kt = kiln::testing;
namespace kc = kiln::testing::ckpt;
using namespace kiln;

namespace {

std::string kiln_exe() {
  char self[PATH_MAX] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir = n > 0 ? std::string(self, static_cast<size_t>(n)) : "";
  dir = dir.substr(0, dir.rfind('/'));              // <build>/tests
  return dir.substr(0, dir.rfind('/')) + "/kiln";
}

struct CliResult {
  int status;
  std::string out, err;
};

CliResult run(const std::string& args) {
  kc::ScratchDir tmp;
  const std::string cmd = kiln_exe() + " " + args + " >" + (tmp / "out") + " 2>" + (tmp / "err");
  const int rc = std::system(cmd.c_str());
  const auto out = kc::read_bytes(tmp / "out"), err = kc::read_bytes(tmp / "err");
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, std::string(out.begin(), out.end()), std::string(err.begin(), err.end())};
}

}  // namespace

class KilnCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kiln_exe().c_str(), X_OK) != 0) GTEST_SKIP() << kiln_exe() << " is not built (target kiln_cli)";
  }
};

TEST_F(KilnCli, InspectAndVerifyGoodFilesOfBothFormats) {
  const std::string dir = kc::fixture_dir() + "/valid/";
  CliResult r = run("ckpt inspect " + dir + "all.kiln");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("Kiln checkpoint, format version 1, 24 tensors"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bfloat16.matrix"), std::string::npos);
  r = run("ckpt inspect " + dir + "int64.safetensors");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("safetensors, 3 tensors"), std::string::npos) << r.out;
  r = run("ckpt verify " + dir + "all.kiln");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("every checksum matches"), std::string::npos) << r.out;
  EXPECT_EQ(run("ckpt verify " + dir + "all.safetensors").status, 0);
}

TEST_F(KilnCli, BadFilesExitOneWithOneLine) {
  for (const char* file : {"native/47_bad_tensor_crc.kiln", "native/13_truncated_data.kiln",
                           "safetensors/24_offsets_reversed.safetensors", "valid/../cases.tsv"}) {
    const CliResult r = run("ckpt verify " + kc::fixture_dir() + "/" + file);
    EXPECT_EQ(r.status, 1) << file;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("kiln: ", 0), 0u) << r.err;
  }
  EXPECT_NE(run("ckpt verify " + kc::fixture_dir() + "/native/47_bad_tensor_crc.kiln").err.find("checksum mismatch"),
            std::string::npos);
  EXPECT_EQ(run("ckpt").status, 2);
  EXPECT_EQ(run("ckpt convert x --to pickle").status, 2);
}

TEST_F(KilnCli, ConvertRoundTripsLosslessly) {
  kc::ScratchDir tmp;
  const std::string src = kc::fixture_dir() + "/valid/all.kiln";
  EXPECT_EQ(run("ckpt convert " + src + " --to safetensors -o " + (tmp / "a.safetensors")).status, 0);
  EXPECT_EQ(io::detect_format(tmp / "a.safetensors"), "safetensors");
  EXPECT_EQ(run("ckpt convert " + (tmp / "a.safetensors") + " --to kiln -o " + (tmp / "b.kiln")).status, 0);
  EXPECT_EQ(kc::read_bytes(tmp / "b.kiln"), kc::read_bytes(src));  // meta included
  EXPECT_EQ(run("ckpt convert " + src + " --to kiln").status, 1);  // already native
}

TEST_F(KilnCli, ReadsEveryDtypeOfTheSafetensorsSpecAndConvertsOnRequest) {
  const std::string dir = kc::fixture_dir() + "/foreign/";
  CliResult r = run("ckpt inspect " + dir + "others.safetensors");
  EXPECT_EQ(r.status, 0) << r.err;
  for (const char* dtype : {"F8_E8M0", "C64", "F4", "F6_E2M3", "F6_E3M2"})
    EXPECT_NE(r.out.find(std::string(" ") + dtype + " "), std::string::npos) << dtype << "\n" << r.out;
  EXPECT_NE(r.out.find("[2, 3]"), std::string::npos) << r.out;  // f4: 6 values in 3 bytes
  for (const char* file : {"integers.safetensors", "floats.safetensors", "others.safetensors"})
    EXPECT_EQ(run("ckpt verify " + dir + file).status, 0) << file;

  kc::ScratchDir tmp;
  r = run("ckpt convert " + dir + "integers.safetensors --to kiln -o " + (tmp / "i.kiln"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("--integers int64"), std::string::npos) << r.err;
  r = run("ckpt convert " + dir + "floats.safetensors --to kiln --floats bfloat16 -o " + (tmp / "f.kiln"));
  ASSERT_EQ(r.status, 0) << r.err;
  const Tensor e5m2 = io::load(tmp / "f.kiln").tensors.at("f8_e5m2");
  EXPECT_EQ(e5m2.dtype(), DType::bf16);
  EXPECT_EQ(static_cast<float>(e5m2.data_ptr<BFloat16>()[0x3c]), 1.0f);  // 0x3c is 1.0 in E5M2
  EXPECT_EQ(run("ckpt convert " + dir + "floats.safetensors --to kiln --floats int8").status, 2);
}
