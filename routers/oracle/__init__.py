"""Oracle pipeline (seed 002): medium and large answers, automatic scoring or a blind judge, 9-cell labels."""

from routers.oracle.judge import (
    BlindJudge,
    JudgeRequest,
    JudgeVerdict,
    answer_order,
    build_judge_prompt,
    deanonymise,
    parse_verdicts,
)
from routers.oracle.pipeline import (
    ORACLE_FILE,
    ROUTING_FILE,
    BenchmarkItem,
    OracleOutputs,
    OraclePipeline,
    OracleResult,
    ResumableJsonlWriter,
    read_benchmark,
    summarize,
)
from routers.oracle.scoring import extract_choice, extract_number, is_idk, score_answer

__all__ = [
    "ORACLE_FILE",
    "ROUTING_FILE",
    "BenchmarkItem",
    "BlindJudge",
    "JudgeRequest",
    "JudgeVerdict",
    "OracleOutputs",
    "OraclePipeline",
    "OracleResult",
    "ResumableJsonlWriter",
    "answer_order",
    "build_judge_prompt",
    "deanonymise",
    "extract_choice",
    "extract_number",
    "is_idk",
    "parse_verdicts",
    "read_benchmark",
    "score_answer",
    "summarize",
]
