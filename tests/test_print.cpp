// Printing matches PyTorch's repr for the common cases.
#include "testing.h"

using namespace kiln;
namespace kt = kiln::testing;

TEST(Print, LikeTorch) {
  EXPECT_EQ(tensor({1.0, 2.0, 3.0}).str(), "tensor([1., 2., 3.])");
  EXPECT_EQ(tensor({1.5, -2.25}).str(), "tensor([ 1.5000, -2.2500])");
  EXPECT_EQ(arange(4).view({2, 2}).str(), "tensor([[0, 1],\n        [2, 3]])");
  EXPECT_EQ(tensor({1.0, 2.0}, {.dtype = DType::f64}).str(), "tensor([1., 2.], dtype=torch.float64)");
  EXPECT_EQ(full({}, 3.0).str(), "tensor(3.)");
  EXPECT_EQ(tensor(std::vector<bool>{true, false}).str(), "tensor([ True, False])");
  EXPECT_EQ(zeros({0}).str(), "tensor([])");
  EXPECT_EQ(zeros({2, 0}).str(), "tensor([], size=(2, 0))");
  EXPECT_EQ(tensor({1e-6, 1.0}).str(), "tensor([1.0000e-06, 1.0000e+00])");
  EXPECT_EQ(arange(8).view({2, 2, 2}).str(), "tensor([[[0, 1],\n         [2, 3]],\n\n        [[4, 5],\n         [6, 7]]])");
  EXPECT_EQ(tensor({NAN, INFINITY, 1.0}).str(), "tensor([nan, inf, 1.])");
}

TEST(Print, SummarizesLargeTensors) {
  const std::string s = arange(2000).str();
  EXPECT_EQ(s, "tensor([   0,    1,    2,  ..., 1997, 1998, 1999])");
}
