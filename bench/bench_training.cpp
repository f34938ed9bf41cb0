// Training throughput (issue 3): forward, backward and optimizer step of the MLP 784-512-512-10
// (SGD momentum, batch 128), of the demo CNN (Adam, batch 128) and of a char-level transformer LM
// (AdamW, 128 sequences of 32 tokens) in a hand-written loop, no
// Trainer, on synthetic Fashion-MNIST-shaped batches made before the clock starts. Prints one
// `RESULT bench=training side=kiln model=...` line per model; bench/training_torch.py is the same
// loop in PyTorch, and bench/vs_torch.py runs both side by side. Not a test: nothing is checked.
// After the MLP it also prints a `# mlp floor` line: the same step's matrix products and optimizer
// step alone, called in sequence without autograd or elementwise ops, which no MLP step on this
// library can beat; the step's ratio to it is the overhead left to remove. Then a `# mlp peak`
// line: the time those products would take at this machine's FMA peak, measured by a loop of
// independent register-only FMAs on the same number of threads, which no f32 MLP step can beat.
//
// --precision bf16-mixed runs each step's forward and loss under autocast (bf16), as
// training_torch.py does under torch.autocast("cpu", dtype=torch.bfloat16); weights stay f32.
// --precision bf16-true holds weights, optimizer state and batches in bf16 (Kiln only). Each run
// also prints a `# memory` line: the parameters' bytes and the allocator's peak during the timed steps.
//
//   bench_training [--model mlp|cnn|transformer|all] [--precision 32-true|bf16-mixed|bf16-true]
//                  [--steps N] [--warmup N] [--batch N] [--threads N] [--help]
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "autograd/autocast.h"
#include "autograd/grad_mode.h"
#include "nn/containers.h"
#include "nn/functional.h"
#include "nn/layers/activation.h"
#include "nn/layers/attention.h"
#include "nn/layers/norm.h"
#include "nn/layers/conv.h"
#include "nn/layers/linear.h"
#include "nn/layers/pool.h"
#include "nn/optim/adam.h"
#include "nn/optim/sgd.h"
#include "tensor/allocator.h"
#include "tensor/cpu_capability.h"
#include "tensor/error.h"
#include "tensor/factories.h"
#include "tensor/generator.h"
#include "tensor/parallel.h"
#include "train/arg_parser.h"
#include "train/seed.h"

namespace {

using namespace kiln;

// Batches cycled through by the loop: enough that no batch stays hot in cache across steps.
constexpr int64_t kDistinctBatches = 8;

struct Options {
  std::string model = "all";
  std::string precision = "32-true";
  int64_t steps = 50;
  int64_t warmup = 5;
  int64_t batch = 128;
  int threads = 2;
};

struct Batch {
  Tensor x, y;
};

// Same shapes and hyperparameters as bench/training_torch.py's build_mlp / build_cnn.
std::shared_ptr<nn::Sequential> build_mlp() {
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Linear>(784, 512), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(512, 512), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(512, 10));
}

std::shared_ptr<nn::Sequential> build_cnn() {
  return std::make_shared<nn::Sequential>(
      std::make_shared<nn::Conv2d>(1, 32, 3, nn::Conv2dOptions{.padding = 1}), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::MaxPool2d>(2),
      std::make_shared<nn::Conv2d>(32, 64, 3, nn::Conv2dOptions{.padding = 1}), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::MaxPool2d>(2), std::make_shared<nn::Flatten>(),
      std::make_shared<nn::Linear>(64 * 7 * 7, 128), std::make_shared<nn::ReLU>(),
      std::make_shared<nn::Linear>(128, 10));
}

// training_torch.py's CharLM: vocab 65, width 128, 4 heads, 2 pre-norm blocks, 32 tokens; the
// logits come out flattened to (N*T, vocab) for cross_entropy.
constexpr int64_t kLmVocab = 65, kLmWidth = 128, kLmHeads = 4, kLmLayers = 2, kLmContext = 32;

class CharLM : public nn::Module {
 public:
  CharLM() : Module("CharLM") {
    Generator gen(0);
    tok_emb = register_module("tok_emb", std::make_shared<nn::Embedding>(kLmVocab, kLmWidth));
    pos_emb = register_parameter("pos_emb", randn({kLmContext, kLmWidth}, {}, &gen) * 0.02);
    blocks = register_module("blocks", std::make_shared<nn::ModuleList>());
    for (int64_t i = 0; i < kLmLayers; ++i)
      blocks->push_back(std::make_shared<nn::TransformerBlock>(kLmWidth, kLmHeads));
    ln_f = register_module("ln_f", std::make_shared<nn::LayerNorm>(kLmWidth));
    head = register_module("head", std::make_shared<nn::Linear>(kLmWidth, kLmVocab));
  }
  Tensor forward(const Tensor& idx) override {
    Tensor x = tok_emb->forward(idx) + pos_emb;
    for (size_t i = 0; i < blocks->size(); ++i) x = (*blocks)[static_cast<int64_t>(i)]->forward(x);
    return head->forward(ln_f->forward(x)).reshape({-1, kLmVocab});
  }

  std::shared_ptr<nn::Embedding> tok_emb;
  Tensor pos_emb;
  std::shared_ptr<nn::ModuleList> blocks;
  std::shared_ptr<nn::LayerNorm> ln_f;
  std::shared_ptr<nn::Linear> head;
};

// Random tokens and next-token targets, flattened as the logits are.
std::vector<Batch> token_batches(int64_t batch, uint64_t seed) {
  Generator gen(seed);
  std::vector<Batch> batches;
  for (int64_t i = 0; i < kDistinctBatches; ++i)
    batches.push_back({randint(0, kLmVocab, {batch, kLmContext}, {}, &gen),
                       randint(0, kLmVocab, {batch * kLmContext}, {}, &gen)});
  return batches;
}

// Standard-normal images (already "normalized") and uniform labels in [0, 10).
std::vector<Batch> synthetic_batches(const Dims& image_shape, int64_t batch, uint64_t seed) {
  Generator gen(seed);
  Dims x_shape = image_shape;
  x_shape.insert(0, batch);
  std::vector<Batch> batches;
  for (int64_t i = 0; i < kDistinctBatches; ++i)
    batches.push_back({randn(x_shape, {}, &gen), randint(0, 10, {batch}, {}, &gen)});
  return batches;
}

struct RunResult {
  double seconds = 0;
  double last_loss = 0;
  int64_t peak_bytes = 0;  // the CPU allocator's high-water mark during the timed steps
};

// bf16-true: the model and the batches' floating inputs in bf16 (labels and tokens stay integers).
void apply_true_precision(const Options& options, nn::Module& model, std::vector<Batch>& batches) {
  if (options.precision != "bf16-true") return;
  model.to(DType::bf16);
  for (Batch& b : batches)
    if (b.x.is_floating()) b.x = b.x.to(DType::bf16);
}

// warmup untimed steps, then `steps` timed ones; the step order matches training_torch.py.
RunResult train(nn::Module& model, optim::Optimizer& optimizer, const std::vector<Batch>& batches,
                const Options& options) {
  Tensor loss;
  auto step = [&](int64_t i) {
    const Batch& b = batches[static_cast<size_t>(i % kDistinctBatches)];
    optimizer.zero_grad();
    {
      const AutocastGuard autocast(DeviceType::cpu, DType::bf16, options.precision == "bf16-mixed");
      loss = nn::F::cross_entropy(model(b.x), b.y);
    }
    loss.backward();
    optimizer.step();
  };
  for (int64_t i = 0; i < options.warmup; ++i) step(i);
  cpu_reset_peak_memory();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.steps; ++i) step(options.warmup + i);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return {seconds, loss.detach().item<double>(), cpu_memory_stats().peak_allocated_bytes};
}

void report(const std::string& model, const RunResult& r, const Options& options, nn::Module& net) {
  int64_t param_bytes = 0;
  for (const Tensor& p : net.parameters()) param_bytes += static_cast<int64_t>(p.nbytes());
  const double samples = static_cast<double>(options.steps * options.batch);
  std::printf("RESULT bench=training side=kiln model=%s precision=%s samples_per_s=%.2f ms_per_step=%.4f steps=%lld "
              "warmup=%lld batch=%lld threads=%d loss=%.5f\n",
              model.c_str(), options.precision.c_str(), samples / r.seconds,
              1e3 * r.seconds / static_cast<double>(options.steps),
              static_cast<long long>(options.steps), static_cast<long long>(options.warmup),
              static_cast<long long>(options.batch), get_num_threads(), r.last_loss);
  std::fflush(stdout);
  std::printf("# memory %s %s: parameters %.2f MiB, allocator peak during the timed steps %.2f MiB\n", model.c_str(),
              options.precision.c_str(), static_cast<double>(param_bytes) / (1 << 20),
              static_cast<double>(r.peak_bytes) / (1 << 20));
  KILN_CHECK(std::isfinite(r.last_loss), "bench_training: the ", model, " loss is ", r.last_loss,
             " after ", options.warmup + options.steps, " steps");
}

// ms per repetition of the MLP step's eight products (forward, input and weight gradients; the
// first layer's input gets none) and its optimizer step, on the trained model's parameters.
double mlp_floor_ms(nn::Sequential& model, optim::Optimizer& optimizer, const std::vector<Batch>& batches,
                    const Options& options) {
  NoGradGuard no_grad;
  const std::vector<Tensor> p = model.parameters();  // w1, b1, w2, b2, w3, b3
  const Tensor& x = batches[0].x;
  const Tensor h1 = addmm(p[1], x, p[0].t()).relu(), h2 = addmm(p[3], h1, p[2].t()).relu();
  const Tensor g3 = randn({options.batch, 10}), g2 = randn({options.batch, 512}), g1 = randn({options.batch, 512});
  auto products_and_step = [&] {
    const Tensor outs[] = {addmm(p[1], x, p[0].t()), addmm(p[3], h1, p[2].t()), addmm(p[5], h2, p[4].t()),
                           mm(g3, p[4]), mm(g3.t(), h2), mm(g2, p[2]), mm(g2.t(), h1), mm(g1.t(), x)};
    optimizer.step();
  };
  for (int64_t i = 0; i < options.warmup; ++i) products_and_step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.steps; ++i) products_and_step();
  return 1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() /
         static_cast<double>(options.steps);
}

// Multiply-adds of the MLP step's products: forward and weight gradients of the three layers, and
// the input gradients of the last two (the first layer's input needs none).
double mlp_step_flops(int64_t batch) {
  const double weights = 784.0 * 512 + 512.0 * 512 + 512.0 * 10;
  const double hidden_input_grads = 512.0 * 512 + 512.0 * 10;
  return 2.0 * static_cast<double>(batch) * (2 * weights + hidden_input_grads);
}

// Twelve independent FMA chains: enough to keep two FMA ports busy through a 4-cycle latency.
constexpr int kChains = 12;
constexpr int64_t kPeakIterations = 20'000'000;

__attribute__((target("avx512f"))) float fma_loop_avx512() {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(0.001f * static_cast<float>(c));
  const __m512 scale = _mm512_set1_ps(0.9999f), shift = _mm512_set1_ps(1e-4f);
  for (int64_t i = 0; i < kPeakIterations; ++i)
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], scale, shift);
  float lanes[16], sum = 0;  // stored, not _mm512_reduce_add_ps: GCC 12 warns on its undefined lanes
  for (int c = 0; c < kChains; ++c) {
    _mm512_storeu_ps(lanes, acc[c]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

// GFLOP/s of `threads` threads each running the FMA loop, best of three; 0 without AVX-512, the
// only kind of machine this project measures on.
double fma_peak_gflops(int threads) {
  if (!__builtin_cpu_supports("avx512f")) return 0;
  const double flops_per_thread = 2.0 * 16 * kChains * static_cast<double>(kPeakIterations);
  double best = 0;
  for (int attempt = 0; attempt < 3; ++attempt) {
    std::vector<float> sinks(static_cast<size_t>(threads));
    std::vector<std::thread> workers;
    const auto t0 = std::chrono::steady_clock::now();
    for (int t = 0; t < threads; ++t)
      workers.emplace_back([&sinks, t] { sinks[static_cast<size_t>(t)] = fma_loop_avx512(); });
    for (std::thread& w : workers) w.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    KILN_CHECK(std::all_of(sinks.begin(), sinks.end(), [](float v) { return std::isfinite(v); }),
               "bench_training: the FMA loop diverged");
    best = std::max(best, flops_per_thread * threads / seconds * 1e-9);
  }
  return best;
}

void run_mlp(const Options& options) {
  seed_everything(0);
  auto model = build_mlp();
  auto batches = synthetic_batches({784}, options.batch, 1);
  apply_true_precision(options, *model, batches);
  optim::SGD optimizer(model->parameters(), {.lr = 0.01, .momentum = 0.9});
  const RunResult r = train(*model, optimizer, batches, options);
  report("mlp", r, options, *model);
  const double step_ms = 1e3 * r.seconds / static_cast<double>(options.steps);
  const double floor_ms = mlp_floor_ms(*model, optimizer, batches, options);
  std::printf("# mlp floor: products + optimizer step alone %.4f ms, the training step %.4f ms (%.3fx the floor)\n",
              floor_ms, step_ms, step_ms / floor_ms);
  const double peak = fma_peak_gflops(get_num_threads());
  const double flops = mlp_step_flops(options.batch);
  if (peak > 0)
    std::printf("# mlp peak: the step's %.1f MFLOP of products at this machine's FMA peak (%.1f GFLOP/s on %d threads, "
                "register-only) take %.4f ms\n",
                flops * 1e-6, peak, get_num_threads(), flops / (peak * 1e9) * 1e3);
  else
    std::printf("# mlp peak: not measured (the FMA loop needs AVX-512)\n");
  std::fflush(stdout);
}

void run_cnn(const Options& options) {
  seed_everything(0);
  auto model = build_cnn();
  auto batches = synthetic_batches({1, 28, 28}, options.batch, 2);
  apply_true_precision(options, *model, batches);
  optim::Adam optimizer(model->parameters(), {.lr = 1e-3});
  report("cnn", train(*model, optimizer, batches, options), options, *model);
}

void run_transformer(const Options& options) {
  seed_everything(0);
  CharLM model;
  auto batches = token_batches(options.batch, 3);
  apply_true_precision(options, model, batches);
  optim::AdamW optimizer(model.parameters(), {.lr = 3e-4, .weight_decay = 0.1});
  report("transformer", train(model, optimizer, batches, options), options, model);
}

// Returns the exit code when the program should stop here (--help, or a bad flag).
std::optional<int> parse(int argc, char** argv, Options& o) {
  ArgParser args("bench_training", "Training-step throughput of the MLP and the demo CNN (see bench/README.md).");
  args.choice("--model", o.model, {"mlp", "cnn", "transformer", "all"}, "which model to time")
      .choice("--precision", o.precision, {"32-true", "bf16-mixed", "bf16-true"},
              "f32; the forward under bf16 autocast; or everything in bf16")
      .option("--steps", o.steps, "N", "timed steps", 1)
      .option("--warmup", o.warmup, "N", "untimed steps first", 0)
      .option("--batch", o.batch, "N", "batch size", 1)
      .option("--threads", o.threads, "N", "compute threads", 1)
      .ignore_prefix("--benchmark_");
  return args.parse(argc, argv);
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto code = parse(argc, argv, options)) return *code;
  try {
    set_num_threads(options.threads);
    std::printf("# kiln training benchmark: threads=%d (asked %d) batch=%lld warmup=%lld steps=%lld "
                "cpu_level=%s\n",
                get_num_threads(), options.threads, static_cast<long long>(options.batch),
                static_cast<long long>(options.warmup), static_cast<long long>(options.steps),
                cpu_capability_name(cpu_capability()).data());
    if (options.model == "mlp" || options.model == "all") run_mlp(options);
    if (options.model == "cnn" || options.model == "all") run_cnn(options);
    if (options.model == "transformer" || options.model == "all") run_transformer(options);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
