"""The driver: one process that reads the config, places the roles (roles.py) and runs the stages.

driver.py   set-up, the role groups, generation/scoring/weight-sync helpers, the run
sft.py      the SFT loop          rl.py   the RL (GRPO-family) loop, one step on one screen
run_state.py  step, stage, sampler positions, RNG, weight version   schedule.py  the learning-rate schedule
evaluation.py `rlframe eval`      metrics.py  timers, reward metrics, progress bars
"""
