"""`python -m youtube-8m`: the original's workflow, step by step, with the command of each step."""

WORKFLOW = """\
YouTube-8M Gated NetVLAD ensemble (2nd YouTube-8M challenge, 10th place) - the original's workflow.
Run each tool as `python -m youtube-8m.TOOL --flags` (`--help` lists a tool's flags).
Paths may be local or gs://. DATA = a folder with frame-level train*/validate*/test* TFRecords
(2018 data, e.g. gs://youtube8m-ml-us-east1/2/frame/...; or synthetic data, step 0).

First run: `bash scripts/main_job.sh` does steps 0-7 on synthetic data and prints a GAP table.

0. synthetic data (the 2018 format):
     python -m youtube-8m.synthetic_data --output_dir=DATA
1. train a single model (checkpoints DIR/model.ckpt-<step>; resumes after an interruption):
     python -m youtube-8m.train --train_data_pattern='DATA/frame/train*.tfrecord,DATA/frame/validate*.tfrecord' \\
       --train_dir=DIR --frame_features --feature_names='rgb,audio' --feature_sizes='1024,128' \\
       --batch_size=160 --base_learning_rate=0.0001 --netvlad_cluster_size=100 \\
       --netvlad_hidden_size=800 --moe_l2=1e-6 --iterations=300 --learning_rate_decay=0.8 \\
       --netvlad_relu=False --gating=True --moe_prob_gating=True --max_steps=500000 \\
       --export_model_steps=5000 --num_epochs=10
2. evaluate checkpoints (GAP@20 on the 60 held-out validate files):
     python -m youtube-8m.eval --eval_data_pattern='DATA/frame/validate*.tfrecord' --train_dir=DIR \\
       --batch_size=1024 --run_once=True --checkpoint=model.ckpt-STEP.index   (+ step 1's model flags)
3. average checkpoints (a range or a list), then evaluate the average:
     python -m youtube-8m.avg_checkpoints --checkpoints_start_end=START,END \\
       --prefix=DIR/model.ckpt- --output_path=DIR/avg_START_END.ckpt
     python -m youtube-8m.eval ... --checkpoint=avg_START_END.ckpt-0.index
   (eval.py writes the inference checkpoint DIR/inference_model_avg_START_END.ckpt-0)
4. pack several single models into ONE float16 graph (the original's ensemble steps 1-5 in one):
     python -m youtube-8m.build_ensemble --train_dir=ENS --checkpoints=CKPT1,CKPT2 --float16_flag=True \\
       --netvlad_cluster_size=K1 --netvlad_hidden_size=H1 --ensemble_wts=0.5 \\
       --netvlad_cluster_size=K2 --netvlad_hidden_size=H2 --ensemble_wts=0.5
   or the original's steps: train --ensemble_num=N --max_steps=10, eval --create_meta_only,
   overwrite_float16_ckpt, eval --checkpoint_file=NAME-0 [--force_output_model_name=True]
   or let it choose members, storages (float32, float16, 8-bit) and weights under a byte limit:
     python -m youtube-8m.build_ensemble --train_dir=ENS --candidates=CKPT1,CKPT2,CKPT3 \\
       --eval_data_pattern='DATA/frame/validate*.tfrecord' [--size_limit_bytes=1073741824] [--dry_run]
5. tune the mixing weights on the validation files, then rebuild with them:
     python -m youtube-8m.ensemble_weights --train_dir=ENS --eval_data_pattern='DATA/frame/validate*.tfrecord'
6. the submission model (tgz) and its size against the 1 GiB limit:
     python -m youtube-8m.inference --train_dir=ENS --output_model_tgz=SUB.tgz \\
       --input_data_pattern='DATA/frame/test*.tfrecord' --output_file=SUB_from_dir.csv
     python -m youtube-8m.model_size --model_tgz=SUB.tgz
7. the Kaggle CSV from the tgz:
     python -m youtube-8m.inference --input_model_tgz=SUB.tgz \\
       --input_data_pattern='DATA/frame/test*.tfrecord' --output_file=SUB.csv --batch_size=512

On a GPU machine or job, first: python -m youtube-8m.gpu_check (TensorFlow's CUDA libraries and GPUs).
On Google Cloud (Vertex AI, us-east1 by default, where the data is): once
scripts/cloud/preflight.sh, then scripts/cloud/build_image.sh and scripts/cloud/submit_*.sh
(steps 6-7: submit_inference.sh).
TensorBoard: tensorboard --logdir=DIR (pip install '.[tensorboard]').
"""


def main():
  print(WORKFLOW, end="")


if __name__ == "__main__":
  main()
