// Uses Kiln as an installed package: prints sum=10 for 1 + 2 + 3 + 4.
#include <kiln/kiln.h>

#include <iostream>

int main() {
  kiln::Tensor t = kiln::arange(1, 5, 1, {.dtype = kiln::DType::f32});
  std::cout << "sum=" << t.sum().item<float>() << "\n";
  return 0;
}
