# Session 2 (H200, 2026-11-26): the leading configurations of session 1
# again with seeds 1 and 2, so the choice on validation rests on three seeds.
w="$weights"
for seed in 1 2; do
  train mnv2-224-ft20c-s$seed --seed $seed --model mobilenetv2 --weights "$w" --size 224 \
    --epochs 3 --lr 1e-3 --fine-tune-epochs 20 --fine-tune-lr 1e-4 --schedule cosine --patience 0
  train mnv2-160-ft10c-s$seed --seed $seed --model mobilenetv2 --weights "$w" --size 160 \
    --epochs 3 --lr 1e-3 --fine-tune-epochs 10 --fine-tune-lr 1e-4 --schedule cosine --patience 0
  train base-30c-5blk-s$seed --seed $seed --size 128 --filters 16,32,64,128,256 --epochs 30 \
    --schedule cosine --patience 0
  train base-45c-s$seed --seed $seed --size 128 --filters 16,32,64,128 --epochs 45 \
    --schedule cosine --patience 0
  train mnv2-224-ft10c-3e4-s$seed --seed $seed --model mobilenetv2 --weights "$w" --size 224 \
    --epochs 3 --lr 1e-3 --fine-tune-epochs 10 --fine-tune-lr 3e-4 --schedule cosine --patience 0
done
