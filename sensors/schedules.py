"""Schedules: nightly fill-in of missing work for every site, the publishing calendar, A/B experiments, weekly
clean-up."""

from dagster import (
    Config,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    job,
    op,
    schedule,
)
from pydantic import Field

from assets import content_pipeline, publish_articles, run_experiments
from pipeline.maintenance import clean_up
from pipeline.models import utcnow
from pipeline.sites import SITES_PARTITION, SiteSettingsError
from pipeline.stages import RunSite
from pipeline.stages.publications import has_due_articles
from pipeline.store import Store, UnknownSite
from resources import MediaResource, StoreResource

NIGHTLY_CRON = "0 2 * * *"  # 02:00 UTC every day
WEEKLY_CRON = "0 3 * * 0"  # 03:00 UTC every Sunday
EXPERIMENTS_CRON = "5 * * * *"  # hourly: periods start at local midnights, switched within the hour
PUBLISHING_CRON = "*/15 * * * *"  # slots are minutes apart at most: a quarter of an hour is close enough


@schedule(
    name="nightly_fill_in",
    cron_schedule=NIGHTLY_CRON,
    execution_timezone="UTC",
    job=content_pipeline,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every night, runs the main job for every site: each stage does only the work still missing, "
    "within the site's budgets (max_run_cost_usd per run, monthly_budget_usd per month in site settings); "
    "sites whose month is over budget are skipped.",
)
def nightly_fill_in(context: ScheduleEvaluationContext, store: StoreResource) -> list[RunRequest] | SkipReason:
    """One run per site partition, keyed by date so a re-evaluated tick never doubles a night's runs; none
    for a site whose spend this month (UTC) has reached its monthly budget."""
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    db = store.open()
    requests, over = [], []
    for slug in sorted(context.instance.get_dynamic_partitions(SITES_PARTITION)):
        if (spend := over_budget(db, slug)) is not None:
            over.append(spend)
            continue
        requests.append(
            RunRequest(partition_key=slug, run_key=f"nightly:{day}:{slug}", tags={"pipeline/run_kind": "fill-in"})
        )
    if over:
        context.log.warning(f"nightly fill-in skips sites over their monthly budget: {'; '.join(over)}")
    if not requests and over:
        return SkipReason(f"every site is over its monthly budget: {'; '.join(over)}")
    return requests


def over_budget(db: Store, slug: str) -> str | None:
    """`slug: spent $x of $y in YYYY-MM` when the site's spend this month has reached its monthly budget."""
    try:
        budget = RunSite.of(db, slug).settings.monthly_budget_usd
    except (UnknownSite, SiteSettingsError):
        return None  # the run reports it
    if budget is None:
        return None
    spent = db.month_spend(slug)
    if spent < budget:
        return None
    return f"{slug}: spent ${spent:.4f} of ${budget:.4f} in {utcnow():%Y-%m}"


@schedule(
    name="publishing_calendar",
    cron_schedule=PUBLISHING_CRON,
    execution_timezone="UTC",
    job=publish_articles,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes, materializes publications for each site with a publishing calendar "
    "(schedule in site settings) that has an approved article whose slot has come; a slot missed while a "
    "target was down is retried at the next tick.",
)
def publishing_calendar(context: ScheduleEvaluationContext, store: StoreResource) -> list[RunRequest]:
    """One publications run per site with a calendar and something due, keyed by tick and site."""
    db, now = store.open(), utcnow()
    requests = []
    for slug in sorted(context.instance.get_dynamic_partitions(SITES_PARTITION)):
        try:
            site = RunSite.of(db, slug)
        except UnknownSite:
            continue
        except SiteSettingsError as error:
            context.log.warning(f"site '{slug}' skipped: {error}")
            continue
        if site.settings.schedule is None or not has_due_articles(db, site, now):
            continue
        tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
        requests.append(
            RunRequest(partition_key=slug, run_key=f"publish:{tick}:{slug}", tags={"pipeline/run_kind": "publishing"})
        )
    return requests


@schedule(
    name="ab_experiments",
    cron_schedule=EXPERIMENTS_CRON,
    execution_timezone="UTC",
    job=run_experiments,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every hour, materializes experiments for each site with a running A/B experiment: the variant "
    "of the current period goes live, and a completed cycle with its metrics is tested and maybe decided.",
)
def ab_experiments(context: ScheduleEvaluationContext, store: StoreResource) -> list[RunRequest]:
    """One experiments run per site with a running experiment (and a Dagster partition), keyed by tick and site."""
    known = set(context.instance.get_dynamic_partitions(SITES_PARTITION))
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    return [
        RunRequest(partition_key=slug, run_key=f"experiments:{tick}:{slug}", tags={"pipeline/run_kind": "experiments"})
        for slug in store.open().sites_with_running_experiments()
        if slug in known
    ]


class CleanupConfig(Config):
    """How old a cache entry may get unused before the clean-up drops it."""

    cache_max_age_days: int = Field(default=60, ge=1)


@op(description="Deletes media files no image row references and response-cache entries unused for long.")
def clean_up_media_and_cache(
    context: OpExecutionContext, config: CleanupConfig, store: StoreResource, media: MediaResource
) -> None:
    """Run the clean-up and log what it removed."""
    report = clean_up(store.open(), media.directory(), config.cache_max_age_days)
    context.log.info(
        f"clean-up: {report.files_deleted} orphaned files ({report.bytes_freed:,} bytes), "
        f"{report.cache_entries_deleted} stale cache entries"
    )


@job(name="maintenance", description="Weekly clean-up of orphaned media files and stale cache entries.")
def maintenance() -> None:
    """The clean-up job."""
    clean_up_media_and_cache()


@schedule(
    name="weekly_clean_up",
    cron_schedule=WEEKLY_CRON,
    execution_timezone="UTC",
    job=maintenance,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every Sunday 03:00 UTC: delete orphaned media files and cache entries unused for 60 days.",
)
def weekly_clean_up(context: ScheduleEvaluationContext) -> RunRequest:
    """One clean-up run per week."""
    return RunRequest(run_key=f"clean-up:{context.scheduled_execution_time:%Y-%m-%d}")
