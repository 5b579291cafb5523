"""Training the agent's model on its own verified work (TRL + PEFT).

suite        task suites (tasks.jsonl + git bundles), loading and per-episode checkouts
curriculum   the built-in generator of small tool-use tasks (bug_templates: the bugs)
evaluate     `agent eval`: parallel sandboxed episodes, pass@1 / pass@K / format errors
oracle       a scripted policy that knows each fix; warm_start: its trajectories as SFT data
sft_data     trajectories -> conversations -> the tokens the local model sees, assistant mask
sft          SFTTrainer + LoRA; grpo + rollout: GRPOTrainer with whole episodes as completions
run_dir      the output directory (adapter, manifest, curves); merge; report
"""
