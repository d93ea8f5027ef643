"""QLoRA MixDPO on one GPU with mixdpo-kit: a model in 4-bit, its tokenizer, preference pairs, a LoraConfig.

    python dpo_mixdpo.py MODEL PAIRS.jsonl OUTPUT_DIR [MAX_STEPS]
"""
import sys

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from mixdpo_kit import MixDPOConfig, MixDPOTrainer

model_name, pairs_file, output_dir = sys.argv[1:4]
max_steps = int(sys.argv[4]) if len(sys.argv) > 4 else -1
gpu = torch.cuda.is_available()

quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16 if gpu else torch.float32)
model = AutoModelForCausalLM.from_pretrained(model_name, quantization_config=quantization,
                                             device_map={"": 0 if gpu else "cpu"})
tokenizer = AutoTokenizer.from_pretrained(model_name)
pairs = load_dataset("json", data_files=pairs_file, split="train")

args = MixDPOConfig(output_dir=output_dir, beta=0.1, learning_rate=5e-6, per_device_train_batch_size=4,
                    gradient_accumulation_steps=4, max_steps=max_steps, logging_steps=1, bf16=gpu, use_cpu=not gpu,
                    report_to="none", tau=0.5, margin_source="ratings")
trainer = MixDPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer,
                        peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
trainer.train()
trainer.save_model(output_dir)
