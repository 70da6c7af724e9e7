"""OSCAR's service API (`/system`, `/run`, `/job`) on the platform's script functions."""

from fastapi import APIRouter

from gateway.oscar import jobs, services

router = APIRouter()
router.include_router(services.router)
router.include_router(jobs.router)

__all__ = ["router"]
