"""The project database's schema: one ordered list of migrations, applied when the store opens.

Each migration names the module that owns its tables; only that module reads or writes them, and
other modules call its functions. A new table or column is a new migration at the end of the list
(never an edit of an applied one); `wb_meta.schema_version` records the last migration applied.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    number: int
    owner: str
    """The module (under workbench/) that owns the tables this creates."""
    what: str
    ddl: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "core.store", "datasets, versions, quarantine, project metadata", """
CREATE TABLE IF NOT EXISTS wb_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE SEQUENCE IF NOT EXISTS wb_version_seq START 1;
CREATE TABLE IF NOT EXISTS wb_datasets (
    name VARCHAR PRIMARY KEY,
    created_at TIMESTAMP DEFAULT current_timestamp,
    description VARCHAR
);
CREATE TABLE IF NOT EXISTS wb_versions (
    version_id INTEGER PRIMARY KEY,
    dataset VARCHAR NOT NULL,
    number INTEGER NOT NULL,
    parent_id INTEGER,
    kind VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    recipe JSON NOT NULL,
    row_count BIGINT NOT NULL,
    content_hash VARCHAR NOT NULL,
    table_name VARCHAR NOT NULL,
    info JSON,
    created_at TIMESTAMP DEFAULT current_timestamp,
    created_by VARCHAR,
    UNIQUE (dataset, number)
);
CREATE TABLE IF NOT EXISTS wb_quarantine (
    dataset VARCHAR NOT NULL,
    version_id INTEGER,
    source VARCHAR NOT NULL,
    line BIGINT,
    field VARCHAR,
    error VARCHAR NOT NULL,
    raw VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp
);
"""),
    Migration(2, "core.auth", "accounts and sign-in sessions", """
CREATE TABLE IF NOT EXISTS wb_users (
    name VARCHAR PRIMARY KEY,
    role VARCHAR NOT NULL,
    password_hash VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by VARCHAR
);
CREATE TABLE IF NOT EXISTS wb_sessions (
    token_sha256 VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
"""),
    Migration(3, "labels.assignment", "who is working on which record", """
CREATE TABLE IF NOT EXISTS wb_claims (
    task VARCHAR NOT NULL,
    item VARCHAR NOT NULL,
    annotator VARCHAR NOT NULL,
    claimed_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
"""),
    Migration(4, "labels.annotations", "questions, answers, adjudicated values", """
CREATE SEQUENCE IF NOT EXISTS wb_question_seq START 1;
CREATE SEQUENCE IF NOT EXISTS wb_annotation_seq START 1;
CREATE TABLE IF NOT EXISTS wb_questions (
    question_id INTEGER PRIMARY KEY,
    dataset VARCHAR NOT NULL,
    name VARCHAR NOT NULL,
    version_id INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    choices JSON NOT NULL,
    anchors JSON NOT NULL,
    column_name VARCHAR,
    key_column VARCHAR,
    overlap INTEGER NOT NULL,
    majority BOOLEAN NOT NULL,
    guidelines VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by VARCHAR,
    updated_at TIMESTAMP,
    updated_by VARCHAR,
    UNIQUE (dataset, name)
);
CREATE TABLE IF NOT EXISTS wb_annotations (
    annotation_id BIGINT NOT NULL,
    question_id INTEGER NOT NULL,
    item VARCHAR NOT NULL,
    record_row BIGINT NOT NULL,
    annotator VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    entered_by VARCHAR NOT NULL,
    source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS wb_gold (
    gold_id BIGINT NOT NULL,
    question_id INTEGER NOT NULL,
    item VARCHAR NOT NULL,
    record_row BIGINT NOT NULL,
    value VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by VARCHAR NOT NULL
);
"""),
    Migration(5, "labels.flags", "records flagged for another look", """
CREATE TABLE IF NOT EXISTS wb_flags (
    version_id INTEGER NOT NULL,
    _row BIGINT NOT NULL,
    reason VARCHAR NOT NULL,
    who VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    eval_id INTEGER
);
"""),
    Migration(6, "models.runs", "training runs", """
CREATE TABLE IF NOT EXISTS wb_runs (
    run_id VARCHAR PRIMARY KEY,
    dataset VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    version_id INTEGER NOT NULL,
    content_hash VARCHAR NOT NULL,
    base_model VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    status VARCHAR NOT NULL,
    steps INTEGER,
    train_loss DOUBLE,
    eval_loss DOUBLE,
    adapter_path VARCHAR,
    run_dir VARCHAR NOT NULL,
    config JSON NOT NULL,
    message VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp,
    ended_at TIMESTAMP,
    created_by VARCHAR
);
"""),
    Migration(7, "models.evaluation", "evaluation runs and their per-item results", """
CREATE SEQUENCE IF NOT EXISTS wb_eval_seq START 1;
CREATE TABLE IF NOT EXISTS wb_evals (
    eval_id INTEGER PRIMARY KEY,
    version_id INTEGER NOT NULL,
    dataset VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    split VARCHAR NOT NULL,
    task VARCHAR NOT NULL,
    run_id VARCHAR,
    base_model VARCHAR NOT NULL,
    adapter VARCHAR,
    model_label VARCHAR NOT NULL,
    settings JSON NOT NULL,
    folder VARCHAR NOT NULL,
    items INTEGER NOT NULL,
    items_hash VARCHAR NOT NULL,
    skipped INTEGER NOT NULL DEFAULT 0,
    status VARCHAR NOT NULL,
    pid INTEGER,
    ingested_bytes BIGINT NOT NULL DEFAULT 0,
    metrics JSON,
    error VARCHAR,
    created_at TIMESTAMP NOT NULL,
    created_by VARCHAR,
    finished_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS wb_eval_items (
    eval_id INTEGER NOT NULL,
    item INTEGER NOT NULL,
    _row BIGINT NOT NULL,
    reference VARCHAR NOT NULL,
    PRIMARY KEY (eval_id, item)
);
CREATE TABLE IF NOT EXISTS wb_eval_outputs (
    eval_id INTEGER NOT NULL,
    item INTEGER NOT NULL,
    output VARCHAR NOT NULL,
    ingested_at TIMESTAMP NOT NULL,
    PRIMARY KEY (eval_id, item)
);
CREATE TABLE IF NOT EXISTS wb_eval_scores (
    eval_id INTEGER NOT NULL,
    item INTEGER NOT NULL,
    metric VARCHAR NOT NULL,
    value DOUBLE,
    PRIMARY KEY (eval_id, item, metric)
);
CREATE TABLE IF NOT EXISTS wb_eval_labels (
    eval_id INTEGER NOT NULL,
    item INTEGER NOT NULL,
    predicted VARCHAR,
    PRIMARY KEY (eval_id, item)
);
"""),
    Migration(8, "models.review", "blind human reviews and their judgements", """
CREATE SEQUENCE IF NOT EXISTS wb_review_seq START 1;
CREATE SEQUENCE IF NOT EXISTS wb_rating_seq START 1;
CREATE TABLE IF NOT EXISTS wb_reviews (
    review_id INTEGER PRIMARY KEY,
    name VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    evals JSON NOT NULL,
    questions JSON NOT NULL,
    overlap INTEGER NOT NULL,
    sample_size INTEGER NOT NULL,
    seed BIGINT NOT NULL,
    show_reference BOOLEAN NOT NULL,
    reviewers JSON,
    instructions VARCHAR NOT NULL,
    items_hash VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by VARCHAR
);
CREATE TABLE IF NOT EXISTS wb_review_items (
    review_id INTEGER NOT NULL,
    item VARCHAR NOT NULL,
    pos INTEGER NOT NULL,
    eval_item INTEGER NOT NULL,
    _row BIGINT NOT NULL,
    category VARCHAR,
    left_eval INTEGER NOT NULL,
    right_eval INTEGER,
    PRIMARY KEY (review_id, item)
);
CREATE TABLE IF NOT EXISTS wb_ratings (
    rating_id BIGINT NOT NULL,
    review_id INTEGER NOT NULL,
    item VARCHAR NOT NULL,
    reviewer VARCHAR NOT NULL,
    question VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    reason VARCHAR,
    created_at TIMESTAMP NOT NULL,
    source VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS wb_review_actions (
    review_id INTEGER NOT NULL,
    item VARCHAR,
    action VARCHAR NOT NULL,
    version_id INTEGER NOT NULL,
    _row BIGINT,
    eval_id INTEGER,
    text VARCHAR,
    who VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
"""),
    Migration(9, "core.auth", "failed sign-ins, for the back-off (per account and per address)", """
CREATE TABLE IF NOT EXISTS wb_signin_failures (
    key VARCHAR PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure TIMESTAMP NOT NULL,
    locked_until TIMESTAMP
);
-- Session cookies used to be readable by scripts (now HttpOnly): end the sessions they carried.
DELETE FROM wb_sessions;
"""),
    Migration(10, "models.judge", "judge runs (a model answering a review's questions) and their verdicts", """
CREATE SEQUENCE IF NOT EXISTS wb_judge_seq START 1;
CREATE TABLE IF NOT EXISTS wb_judges (
    judge_id INTEGER PRIMARY KEY,
    review_id INTEGER,
    evals JSON NOT NULL,
    kind VARCHAR NOT NULL,
    questions JSON NOT NULL,
    judge JSON NOT NULL,
    template VARCHAR NOT NULL,
    settings JSON NOT NULL,
    status VARCHAR NOT NULL,
    n_units INTEGER NOT NULL,
    created_at TIMESTAMP NOT NULL,
    created_by VARCHAR,
    finished_at TIMESTAMP,
    error VARCHAR
);
CREATE TABLE IF NOT EXISTS wb_judge_verdicts (
    judge_id INTEGER NOT NULL,
    item VARCHAR NOT NULL,
    pos INTEGER NOT NULL,
    eval_item INTEGER NOT NULL,
    category VARCHAR,
    question VARCHAR NOT NULL,
    order_no INTEGER NOT NULL,
    first_eval INTEGER NOT NULL,
    second_eval INTEGER,
    prompt VARCHAR NOT NULL,
    raw VARCHAR NOT NULL,
    reason VARCHAR,
    verdict VARCHAR,
    seconds DOUBLE,
    PRIMARY KEY (judge_id, item, question, order_no)
);
"""),
    Migration(11, "labels.questions", "which column a question's choices came from, and the metadata annotators see", """
ALTER TABLE wb_questions ADD COLUMN IF NOT EXISTS choices_from VARCHAR;
ALTER TABLE wb_questions ADD COLUMN IF NOT EXISTS shown_columns JSON;
"""),
    Migration(12, "data.manage", "archived datasets (left out of the lists) and the names datasets had before a rename", """
ALTER TABLE wb_datasets ADD COLUMN IF NOT EXISTS archived_at TIMESTAMP;
ALTER TABLE wb_datasets ADD COLUMN IF NOT EXISTS archived_by VARCHAR;
CREATE TABLE IF NOT EXISTS wb_dataset_renames (
    old_name VARCHAR NOT NULL,
    new_name VARCHAR NOT NULL,
    renamed_at TIMESTAMP NOT NULL,
    renamed_by VARCHAR
);
"""),
    Migration(13, "labels.questions", "the order a question's labelling queue hands records out in", """
ALTER TABLE wb_questions ADD COLUMN IF NOT EXISTS queue_order VARCHAR DEFAULT 'default';
"""),
)

# The columns that hold a dataset's name as text (every other reference is a version id). A rename
# (data.manage.rename_dataset) changes them all in one transaction: a new one belongs in this list.
DATASET_NAME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("wb_datasets", "name"),
    ("wb_versions", "dataset"),
    ("wb_quarantine", "dataset"),
    ("wb_questions", "dataset"),
    ("wb_runs", "dataset"),
    ("wb_evals", "dataset"),
)
