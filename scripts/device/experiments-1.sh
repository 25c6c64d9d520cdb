# Session 1 (H200, 2026-11-26): ResNet50V2 from scratch, MobileNetV2 and
# baseline configurations; results in docs/gpu-runs.md.
# ResNet50V2 from random initialisation (no Keras weights exist here).
train resnet50v2-128-scratch --model resnet50v2 --size 128 --epochs 0 \
  --fine-tune-epochs 30 --fine-tune-lr 1e-3 --schedule cosine --patience 0
# MobileNetV2 (ImageNet) configurations, chosen on validation.
train mnv2-128-study --model mobilenetv2 --weights "$weights" --size 128 \
  --epochs 3 --lr 1e-3 --fine-tune-epochs 6 --fine-tune-lr 1e-4 --patience 4 --lr-patience 2
train mnv2-224-ft10c --model mobilenetv2 --weights "$weights" --size 224 \
  --epochs 3 --lr 1e-3 --fine-tune-epochs 10 --fine-tune-lr 1e-4 --schedule cosine --patience 0
train mnv2-160-ft10c --model mobilenetv2 --weights "$weights" --size 160 \
  --epochs 3 --lr 1e-3 --fine-tune-epochs 10 --fine-tune-lr 1e-4 --schedule cosine --patience 0
train mnv2-224-ft20c --model mobilenetv2 --weights "$weights" --size 224 \
  --epochs 3 --lr 1e-3 --fine-tune-epochs 20 --fine-tune-lr 1e-4 --schedule cosine --patience 0
train mnv2-224-ft10c-3e4 --model mobilenetv2 --weights "$weights" --size 224 \
  --epochs 3 --lr 1e-3 --fine-tune-epochs 10 --fine-tune-lr 3e-4 --schedule cosine --patience 0
# Baseline CNN configurations at 128 px.
train base-study-15p --size 128 --filters 16,32,64,128 --epochs 15 --patience 4 --lr-patience 2
train base-30c --size 128 --filters 16,32,64,128 --epochs 30 --schedule cosine --patience 0
train base-45c --size 128 --filters 16,32,64,128 --epochs 45 --schedule cosine --patience 0
train base-30c-3e3 --size 128 --filters 16,32,64,128 --epochs 30 --lr 3e-3 --schedule cosine --patience 0
train base-30c-wide --size 128 --filters 32,64,128,256 --epochs 30 --schedule cosine --patience 0
train base-30c-5blk --size 128 --filters 16,32,64,128,256 --epochs 30 --schedule cosine --patience 0
train resnet50v2-224-scratch --model resnet50v2 --size 224 --epochs 0 \
  --fine-tune-epochs 30 --fine-tune-lr 1e-3 --schedule cosine --patience 0

