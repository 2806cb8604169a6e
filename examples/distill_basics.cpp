// SPDX-License-Identifier: MIT
// The code blocks of docs/distillation.md, compiled and run: the evaluate() interface of KDLoss and RKDLoss, then
// one training step's distillation terms (KD on logits, attention transfer and a FitNet hint with a learned 1x1
// regressor on 8 x 8 feature maps, CRD against a memory of the training set). The docs' blocks use tensors
// they do not declare (a network would produce them); each function declares them first, filled with random
// values, then runs the block as it stands in the docs and prints the values and gradient norms.
#include <kshot/distill.hpp>

#include <cstdint>
#include <cstdio>

namespace {

/// A rows x cols matrix of standard normal values from RandomStream(seed).
kshot::RowMatrixX<float> random_normal(kshot::Index rows, kshot::Index cols, std::uint64_t seed) {
  kshot::RowMatrixX<float> m(rows, cols);
  kshot::RandomStream rng(seed);
  rng.fill_normal(m);
  return m;
}

/// n labels cycling over `classes`.
kshot::LabelVector cycling_labels(kshot::Index n, kshot::Index classes) {
  kshot::LabelVector y(n);
  for (kshot::Index i = 0; i < n; ++i) y[i] = static_cast<kshot::Label>(i % classes);
  return y;
}

}  // namespace

void interface() {
  // Setup (not in the docs): a batch of 32 samples, 100 classes, embeddings of width 64 (student) and 128.
  const kshot::RowMatrixX<float> student_logits = random_normal(32, 100, 1);
  const kshot::RowMatrixX<float> teacher_logits = random_normal(32, 100, 2);
  const kshot::LabelVector targets = cycling_labels(32, 100);
  kshot::RowMatrixX<float> grad(32, 100);
  const kshot::RowMatrixX<float> student_emb = random_normal(32, 64, 3);
  const kshot::RowMatrixX<float> teacher_emb = random_normal(32, 128, 4);
  kshot::RowMatrixX<float> grad_emb(32, 64);
// ---- docs/distillation.md, block 1
kshot::KDLoss<float> kd;                        // torchdistill: KDLoss(temperature=4, alpha=0.9)
float value = kd.evaluate(student_logits, teacher_logits, targets, grad);   // N x C, N labels, grad N x C
value = kd.evaluate(student_logits, teacher_logits);                       // no targets: the KL term alone

kshot::RKDLoss<float> rkd;                      // torchdistill: RKDLoss(dist_factor=1, angle_factor=2, 'mean')
value = rkd.evaluate(student_emb, teacher_emb, grad_emb);                  // N x d_s and N x d_t
// ---- end
  std::printf("KD with targets: |grad| = %.4f; RKD: %.4f, |grad| = %.4g\n", static_cast<double>(grad.norm()),
              static_cast<double>(value), static_cast<double>(grad_emb.norm()));
}

void usage() {
  // Setup (not in the docs): 16 samples, 10 classes; 8 x 8 feature maps with 64 (student) and 128 (teacher)
  // channels; embeddings of width 128, L2-normalised as CRD expects; dataset indices in [0, 50000).
  const kshot::RowMatrixX<float> logits_s = random_normal(16, 10, 5);
  const kshot::RowMatrixX<float> logits_t = random_normal(16, 10, 6);
  const kshot::LabelVector labels = cycling_labels(16, 10);
  kshot::RowMatrixX<float> grad_logits(16, 10);
  const kshot::RowMatrixX<float> fmap_s = random_normal(16, 64 * 8 * 8, 7);
  const kshot::RowMatrixX<float> fmap_t = random_normal(16, 128 * 8 * 8, 8);
  kshot::RowMatrixX<float> grad_fmap(16, 64 * 8 * 8), grad_fmap2(16, 64 * 8 * 8);
  kshot::RowMatrixX<float> grad_weight(128, 64);
  kshot::VectorX<float> grad_bias(128);
  const kshot::RowMatrixX<float> embed_s = random_normal(16, 128, 9).rowwise().normalized();
  const kshot::RowMatrixX<float> embed_t = random_normal(16, 128, 10).rowwise().normalized();
  kshot::IndexVector pos(16);
  for (kshot::Index i = 0; i < 16; ++i) pos[i] = 3000 * i + 17;
  kshot::RowMatrixX<float> grad_embed_s(16, 128), grad_embed_t(16, 128);
// ---- docs/distillation.md, block 2 (its #include is at the top of this file)
kshot::KDLoss<float> kd;                       // T = 4, alpha = 0.9, beta = 1 - alpha
kshot::AttentionTransferLoss<float> at;        // code mode
at.height = 8;
at.width = 8;                                  // maps: N rows of C * 8 * 8

// One training step's distillation terms, each with its own gradient buffer:
float loss = kd.evaluate(logits_s, logits_t, labels, grad_logits)
           + at.evaluate(fmap_s, fmap_t, grad_fmap);

// FitNet with a learned 1x1 regressor from 64 to 128 channels on 8 x 8 maps:
kshot::FitNetLoss<float> hint;
hint.spatial = 64;
hint.init_regressor(/*student_channels=*/64, /*teacher_channels=*/128, /*seed=*/1);
loss += hint.evaluate(fmap_s, fmap_t, grad_fmap2, grad_weight, grad_bias);   // grad_weight 128 x 64, grad_bias 128

// CRD with a memory of the whole training set (dataset indices pos per sample):
kshot::CRDLoss<float> crd(/*dim=*/128, /*memory_size=*/50000, /*seed=*/7);
loss += crd.evaluate(embed_s, embed_t, pos, grad_embed_s, grad_embed_t);
// ---- end
  std::printf("KD + AT + FitNet + CRD = %.4f\n", static_cast<double>(loss));
  std::printf("|grad| logits %.4g, feature map (AT) %.4g, feature map (FitNet) %.4g, weight %.4g, bias %.4g\n",
              static_cast<double>(grad_logits.norm()), static_cast<double>(grad_fmap.norm()),
              static_cast<double>(grad_fmap2.norm()), static_cast<double>(grad_weight.norm()),
              static_cast<double>(grad_bias.norm()));
  std::printf("|grad| CRD student %.4g, teacher %.4g; %ld negatives per sample\n",
              static_cast<double>(grad_embed_s.norm()), static_cast<double>(grad_embed_t.norm()),
              static_cast<long>(crd.last_indices().cols() - 1));
}

int main() {
  interface();
  usage();
}
