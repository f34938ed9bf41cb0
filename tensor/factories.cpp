// Factories. Every one allocates through make_tensor and fills through a dispatched kernel, so
// each works on any device that registers the fill/range/random kernels.
#include "tensor/factories.h"

#include <cmath>

#include "tensor/dispatch.h"

namespace kiln {
namespace {
DType or_default(const TensorOptions& o) { return o.dtype.value_or(DType::f32); }
TensorOptions like(const Tensor& t, TensorOptions o) {
  KILN_CHECK(t.defined(), "*_like: the template tensor is undefined");
  if (!o.dtype) o.dtype = t.dtype();
  return o;
}
Generator& pick(Generator* gen, Device d) { return gen ? *gen : default_generator(d); }
}  // namespace

Tensor empty(const Dims& shape, TensorOptions opts) { return make_tensor(shape, or_default(opts), opts.device); }

Tensor full(const Dims& shape, const Scalar& value, TensorOptions opts) {
  Tensor t = make_tensor(shape, opts.dtype.value_or(value.natural_dtype()), opts.device);
  if (t.numel()) dispatch<Op::fill>(opts.device, t, value);
  return t;
}
Tensor zeros(const Dims& shape, TensorOptions opts) { return full(shape, 0.0, {or_default(opts), opts.device}); }
Tensor ones(const Dims& shape, TensorOptions opts) { return full(shape, 1.0, {or_default(opts), opts.device}); }

Tensor arange(const Scalar& end, TensorOptions opts) { return arange(0, end, 1, opts); }

Tensor arange(const Scalar& start, const Scalar& end, const Scalar& step, TensorOptions opts) {
  const bool any_float = start.is_floating() || end.is_floating() || step.is_floating();
  const DType dtype = opts.dtype.value_or(any_float ? DType::f32 : DType::i64);
  const double s = start.to_double(), e = end.to_double(), st = step.to_double();
  KILN_CHECK(std::isfinite(s) && std::isfinite(e) && std::isfinite(st), "arange: start ", start, ", end ", end,
             " and step ", step, " must be finite");
  KILN_CHECK(st != 0, "arange: step must be nonzero");
  KILN_CHECK((st > 0 && e >= s) || (st < 0 && e <= s), "arange: upper bound ", end, " and lower bound ", start,
             " are inconsistent with step sign ", step);
  const double count = std::ceil((e - s) / st);
  KILN_CHECK(count < 9.0e18, "arange: ", count, " elements is too many");
  Tensor t = make_tensor({static_cast<int64_t>(count)}, dtype, opts.device);
  if (t.numel()) dispatch<Op::arange>(opts.device, t, s, st);
  return t;
}

Tensor linspace(double start, double end, int64_t steps, TensorOptions opts) {
  KILN_CHECK(steps >= 0, "linspace: number of steps must be non-negative, got ", steps);
  Tensor t = make_tensor({steps}, or_default(opts), opts.device);
  if (steps) dispatch<Op::linspace>(opts.device, t, start, end);
  return t;
}

Tensor eye(int64_t n, std::optional<int64_t> m, TensorOptions opts) {
  const int64_t cols = m.value_or(n);
  KILN_CHECK(n >= 0 && cols >= 0, "eye: sizes must be non-negative, got n=", n, ", m=", cols);
  Tensor t = zeros({n, cols}, opts);
  const int64_t k = std::min(n, cols);
  if (k) {
    Tensor diag = t.as_strided({k}, {cols + 1}, 0);
    diag.fill_(1);
  }
  return t;
}

Tensor& uniform_(Tensor& t, double lo, double hi, Generator* gen) {
  KILN_CHECK(lo <= hi, "uniform_: expected lo <= hi, got lo=", lo, ", hi=", hi);
  if (t.numel() == 0) return t;
  if (t.is_contiguous()) {
    dispatch<Op::uniform>(t.device(), t, lo, hi, pick(gen, t.device()));
  } else {
    Tensor tmp = make_tensor(t.shape(), t.dtype(), t.device());
    dispatch<Op::uniform>(t.device(), tmp, lo, hi, pick(gen, t.device()));
    t.copy_(tmp);
  }
  t.bump_version();
  return t;
}

Tensor& normal_(Tensor& t, double mean, double stddev, Generator* gen) {
  KILN_CHECK(stddev >= 0, "normal_: expected std >= 0, got ", stddev);
  if (t.numel() == 0) return t;
  if (t.is_contiguous()) {
    dispatch<Op::normal>(t.device(), t, mean, stddev, pick(gen, t.device()));
  } else {
    Tensor tmp = make_tensor(t.shape(), t.dtype(), t.device());
    dispatch<Op::normal>(t.device(), tmp, mean, stddev, pick(gen, t.device()));
    t.copy_(tmp);
  }
  t.bump_version();
  return t;
}

Tensor rand(const Dims& shape, TensorOptions opts, Generator* gen) {
  Tensor t = empty(shape, opts);
  KILN_CHECK(t.is_floating(), "rand: expected a floating dtype, got ", t.dtype());
  return uniform_(t, 0.0, 1.0, gen);
}

Tensor randn(const Dims& shape, TensorOptions opts, Generator* gen) {
  Tensor t = empty(shape, opts);
  KILN_CHECK(t.is_floating(), "randn: expected a floating dtype, got ", t.dtype());
  return normal_(t, 0.0, 1.0, gen);
}

Tensor randint(int64_t low, int64_t high, const Dims& shape, TensorOptions opts, Generator* gen) {
  KILN_CHECK(low < high, "randint: expected low < high, got low=", low, ", high=", high);
  int64_t range = 0;
  KILN_CHECK(!__builtin_sub_overflow(high, low, &range), "randint: range [", low, ", ", high, ") overflows int64");
  Tensor t = make_tensor(shape, opts.dtype.value_or(DType::i64), opts.device);
  if (t.numel())
    dispatch<Op::randint>(opts.device, t, static_cast<double>(low), static_cast<double>(high), pick(gen, opts.device));
  return t;
}

Tensor bernoulli(const Dims& shape, double p, TensorOptions opts, Generator* gen) {
  KILN_CHECK(p >= 0 && p <= 1, "bernoulli: expected 0 <= p <= 1, got ", p);
  Tensor t = empty(shape, opts);
  if (t.numel()) dispatch<Op::bernoulli>(opts.device, t, p, 0.0, pick(gen, opts.device));
  return t;
}

Tensor bernoulli(const Tensor& probs, Generator* gen) {
  KILN_CHECK(probs.is_floating(), "bernoulli: probabilities must be floating, got ", probs.dtype());
  const Tensor p = probs.contiguous();
  Tensor t = make_tensor(p.shape(), p.dtype(), p.device());
  if (t.numel()) dispatch<Op::bernoulli_tensor>(p.device(), p, t, pick(gen, p.device()));
  return t;
}

Tensor from_blob(void* data, const Dims& shape, DType dtype, std::function<void(void*)> deleter,
                 std::optional<Dims> strides, Device device) {
  KILN_CHECK(data != nullptr || checked_numel(shape, "from_blob") == 0, "from_blob: data is null");
  const Dims st = strides.value_or(contiguous_strides(shape));
  KILN_CHECK(st.size() == shape.size(), "from_blob: shape ", shape, " and strides ", st, " differ in length");
  const int64_t n = checked_numel(shape, "from_blob");
  int64_t extent = n > 0 ? 1 : 0;  // elements spanned
  for (int i = 0; i < shape.size() && n > 0; ++i) {
    KILN_CHECK(st[i] >= 0, "from_blob: negative stride ", st[i]);
    extent += (shape[i] - 1) * st[i];
  }
  auto impl = Ref<TensorImpl>::make();
  impl->storage = Ref<Storage>::make(data, static_cast<size_t>(extent) * dtype_size(dtype), device, std::move(deleter));
  impl->shape = shape;
  impl->strides = st;
  impl->dtype = dtype;
  impl->refresh();
  return Tensor(std::move(impl));
}

template <class T>
Tensor tensor(const std::vector<T>& values, std::optional<Dims> shape, TensorOptions opts) {
  const Dims sh = shape.value_or(Dims{static_cast<int64_t>(values.size())});
  KILN_CHECK(checked_numel(sh, "tensor") == static_cast<int64_t>(values.size()), "tensor: shape ", sh, " holds ",
             checked_numel(sh, "tensor"), " elements, but ", values.size(), " values were given");
  std::vector<T> copy = values;  // from_blob needs a mutable pointer; vector<bool> has none
  Tensor src;
  if constexpr (std::is_same_v<T, bool>) {
    std::vector<uint8_t> bytes(values.begin(), values.end());
    src = from_blob(bytes.data(), sh, DType::boolean).clone();  // clone: bytes dies at the end of this block
  } else {
    src = from_blob(copy.data(), sh, dtype_v<T>);
  }
  Tensor out = make_tensor(sh, opts.dtype.value_or(dtype_v<T>), opts.device);
  out.copy_(src);
  return out;
}
template Tensor tensor(const std::vector<float>&, std::optional<Dims>, TensorOptions);
template Tensor tensor(const std::vector<double>&, std::optional<Dims>, TensorOptions);
template Tensor tensor(const std::vector<Half>&, std::optional<Dims>, TensorOptions);
template Tensor tensor(const std::vector<BFloat16>&, std::optional<Dims>, TensorOptions);
template Tensor tensor(const std::vector<int64_t>&, std::optional<Dims>, TensorOptions);
template Tensor tensor(const std::vector<int32_t>&, std::optional<Dims>, TensorOptions);
template Tensor tensor(const std::vector<uint8_t>&, std::optional<Dims>, TensorOptions);
template Tensor tensor(const std::vector<bool>&, std::optional<Dims>, TensorOptions);

Tensor tensor(std::initializer_list<double> values, TensorOptions opts) {
  std::vector<double> v(values);
  return tensor(v, std::nullopt, {opts.dtype.value_or(DType::f32), opts.device});
}

Tensor empty_like(const Tensor& t, TensorOptions opts) { return empty(t.shape(), like(t, opts)); }
Tensor zeros_like(const Tensor& t, TensorOptions opts) { return zeros(t.shape(), like(t, opts)); }
Tensor ones_like(const Tensor& t, TensorOptions opts) { return ones(t.shape(), like(t, opts)); }
Tensor full_like(const Tensor& t, const Scalar& value, TensorOptions opts) { return full(t.shape(), value, like(t, opts)); }
Tensor rand_like(const Tensor& t, TensorOptions opts, Generator* gen) { return rand(t.shape(), like(t, opts), gen); }
Tensor randn_like(const Tensor& t, TensorOptions opts, Generator* gen) { return randn(t.shape(), like(t, opts), gen); }

}  // namespace kiln
