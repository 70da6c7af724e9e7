"""Errors of the runtimes: providers and workers."""

from __future__ import annotations

from eventbus.errors import DeepfaasError


class ProviderError(DeepfaasError):
    """A provider could not do what was asked; ``fields`` say which site and why."""

    code = "provider"


class ProvisioningError(ProviderError):
    """Provisioning a runtime failed on a site (the next ranked site may be tried)."""

    code = "provisioning_failed"


class RuntimeNotFoundError(ProvisioningError):
    """The site no longer has the runtime (deleted behind our back, or never made)."""


class CapacityError(ProviderError):
    """The site lacks the resources asked for (GPU model, count, memory)."""

    code = "no_capacity"


class CredentialsError(ProviderError):
    """The site's credentials are missing or refused."""

    code = "credentials"


class FunctionLoadError(DeepfaasError):
    """A function's code could not be imported or its handler not found."""

    code = "function_load"


class SiteConfigError(DeepfaasError):
    """The sites file (or one site in it) is invalid."""

    code = "invalid"


class TemplateError(DeepfaasError):
    """A TOSCA template failed to parse or asks for what no site offers; names node/property."""

    code = "invalid"


class ModelError(DeepfaasError):
    """Root of model plug-in errors."""

    code = "model"


class ModelNotFoundError(ModelError):
    """No model plug-in (or version) by that name."""

    code = "not_found"


class ModelInputError(ModelError):
    """Input a model cannot use (corrupt image, wrong shape, missing column)."""

    code = "invalid"


class ArtifactRefusedError(ModelError):
    """A plug-in refused to load an artifact (not its safe format, an untrusted type, corrupt).

    Final, like bad input: loading it again would be refused the same way.
    """

    code = "invalid"
