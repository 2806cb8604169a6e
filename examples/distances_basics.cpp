// SPDX-License-Identifier: MIT
/**
 * @file examples/distances_basics.cpp
 * @brief The usage example of docs/distances.md, compiled: pairwise matrices, the self form, the
 * backward pass and the chunked form.
 */
#include <kshot/distances.hpp>

#include <cstdio>

int main() {
  // Three products and two category prototypes, one embedding per row (row-major N x D).
  kshot::RowMatrixX<float> products(3, 2), prototypes(2, 2);
  products << 1, 0, 0, 2, 3, 4;
  prototypes << 1, 1, -1, 0;

  // One-off calls allocate a little scratch memory...
  const kshot::RowMatrixX<float> d2 = kshot::pairwise_distances(products, prototypes);  // squared Euclidean
  const kshot::RowMatrixX<float> cos = kshot::pairwise_distances(products, prototypes, kshot::CosineSimilarity{});
  const kshot::RowMatrixX<float> self = kshot::self_distances(products, kshot::Euclidean{});

  // ...a PairwiseDistance object reuses it, call after call.
  kshot::PairwiseDistance<float, kshot::SquaredEuclidean> engine;
  kshot::RowMatrixX<float> d(3, 2);
  engine.compute(products, prototypes, d);

  // Backward: with G = dL/dD (here L = sum of all distances, so G = 1), get dL/dA and dL/dB.
  const kshot::RowMatrixX<float> g = kshot::RowMatrixX<float>::Ones(3, 2);
  kshot::RowMatrixX<float> grad_products(3, 2), grad_prototypes(2, 2);
  engine.backward(products, prototypes, d, g, grad_products, grad_prototypes);

  // Chunked: rows of D(A, B) in blocks of at most 2 rows, in order, with bounded memory.
  float total = 0;
  engine.compute_chunked(products, prototypes, 2, [&](kshot::Index, const auto& block) { total += block.sum(); });

  std::printf("squared Euclidean:\n");
  for (kshot::Index i = 0; i < d2.rows(); ++i) std::printf("  %6.2f %6.2f\n", double(d2(i, 0)), double(d2(i, 1)));
  std::printf("cosine similarity of product 2 to prototype 0: %.4f\n", double(cos(2, 0)));
  std::printf("Euclidean distance between products 1 and 2: %.4f (diagonal %.1f)\n", double(self(1, 2)),
              double(self(1, 1)));
  std::printf("dL/d(product 0) = (%.1f, %.1f); sum of D from chunks = %.1f\n", double(grad_products(0, 0)),
              double(grad_products(0, 1)), double(total));
  return 0;
}
