"""A trigger's or route's chain checked when it arrives: against the catalog and the tenant's policy (relay.chains
says what a chain is; relay.chain_runs starts its runs, and checks each again then)."""

from __future__ import annotations

from relay import chains
from relay import policy as rules
from relay.catalog import Catalog, PipelineDefinition, check_parameters
from relay.errors import InvalidTriggerError, Problem
from relay.triggers import Trigger


def ceiling(policy: rules.Policy, tenant: str) -> tuple[int, str]:
    """How many runs a chain of `tenant` ("" : none) may start after its first, and where the policy says so."""
    own = policy.tenant(tenant) if tenant else None
    if own is not None:
        return own.max_chain, f"tenants.{tenant}.max_chain"
    return policy.max_chain, "max_chain"


def check_chain(
    catalog: Catalog, policy: rules.Policy, tenant: rules.Tenant | None, trigger: Trigger, uri: str
) -> None:
    """InvalidTriggerError (invalid_chain) naming every way the trigger's chain cannot hold: a pipeline the catalog
    lacks or the tenant may not run, a template naming an output or parameter its pipeline does not declare, a
    parameter the next pipeline does not take or lacks. Outputs a run may lack are checked again at its end."""
    if not trigger.chain:
        return
    problems: list[Problem] = []
    most, where = ceiling(policy, tenant.name if tenant else "")
    if most == 0:
        problems.append(Problem("chain", f"no chain ({where} is 0)", f"{len(trigger.chain)} step(s)"))
    reachable = {trigger.pipeline, *(step.pipeline for step in trigger.chain)}
    for index, step in enumerate(trigger.chain):
        at = f"chain[{index}]"
        if step.after and step.after not in reachable:
            problems.append(Problem(f"{at}.after", "the trigger's pipeline or one the chain starts", repr(step.after)))
        denied = rules.pipeline_denied(tenant, step.pipeline, f"{at}.pipeline")
        problems += [denied] if denied is not None else []
        after = definition_or_problem(catalog, step.after or trigger.pipeline, f"{at}.after", uri)
        following = definition_or_problem(catalog, step.pipeline, f"{at}.pipeline", uri)
        problems += [found for found in (after, following) if isinstance(found, Problem)]
        if isinstance(after, PipelineDefinition):
            problems += _template_problems(step, at, after)
        if isinstance(following, PipelineDefinition):
            problems += _parameter_problems(step, at, following)
    if problems:
        raise InvalidTriggerError(uri, problems, code="invalid_chain")


def definition_or_problem(catalog: Catalog, name: str, where: str, uri: str) -> PipelineDefinition | Problem:
    try:
        return catalog.get(name, trigger_uri=uri)
    except InvalidTriggerError:
        return Problem(where, "a pipeline in the catalog", repr(name))


def _template_problems(step: chains.Step, at: str, after: PipelineDefinition) -> list[Problem]:
    """Fields naming an output or parameter the `after` pipeline does not declare."""
    problems = []
    for path, name in step.fields():
        kind, _, key = name.partition(".")
        if kind == "outputs" and key not in after.outputs:
            declared = ", ".join(after.outputs) or "none"
            problems.append(Problem(f"{at}.{path}", f"an output {after.name} declares ({declared})", f"{{{name}}}"))
        elif kind == "parameters" and key not in after.inputs:
            declared = ", ".join(sorted(after.inputs)) or "none"
            problems.append(Problem(f"{at}.{path}", f"a parameter {after.name} takes ({declared})", f"{{{name}}}"))
    return problems


def _parameter_problems(step: chains.Step, at: str, following: PipelineDefinition) -> list[Problem]:
    """The next pipeline's parameter checks, on the values known now: a templated value is checked at the end."""
    templated = {path.split(".")[1].split("[")[0] for path, _ in step.fields()}
    literal = {name: value for name, value in step.parameters.items() if name not in templated}
    return [
        Problem(f"{at}.{problem.field}", problem.expected, problem.found)
        for problem in check_parameters(following, literal)
        if problem.field.removeprefix("parameters.") not in templated
    ]
