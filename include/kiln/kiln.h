// The whole public API of Kiln: #include <kiln/kiln.h> and link kiln::kiln.
#pragma once

#include "tensor/dtype.h"
#include "tensor/device.h"
#include "tensor/error.h"
#include "tensor/factories.h"
#include "tensor/generator.h"
#include "tensor/state_dict.h"
#include "tensor/parallel.h"
#include "tensor/tensor.h"
#include "tensor/type_promotion.h"
#include "autograd/ops/elementwise.h"
#include "autograd/ops/reduce.h"
#include "autograd/ops/linalg.h"
#include "autograd/ops/indexing.h"
#include "autograd/engine.h"
#include "autograd/grad_mode.h"
#include "autograd/record.h"
