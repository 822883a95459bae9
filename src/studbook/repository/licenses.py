"""The `license` key of a contract or a recipe: a Hugging Face Hub license identifier.

A member's card (and the `README.md` that goes up to the Hub with it) carries the license
of the recipe, else of its contract, else `unknown`: studbook cannot know under which
terms a team's weights and corpus may be shared, and `unknown` is the Hub's own word for
that. Identifiers are the Hub's (`docs/hub/repositories-licenses.md`); any other license
is `other` with a `name` (the Hub's `license_name`, a lower-case slug) and optionally a
`link` (`license_link`: a URL, or a file such as `LICENSE.md` published beside the card).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT = "unknown"
# The Hub's identifiers (hub-docs, docs/hub/repositories-licenses.md); a license not listed
# here is `other` plus a name, which the Hub accepts too.
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0
bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear
c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0
cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0
cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl
ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1
ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license llama2 llama3 llama3.1 llama3.2 llama3.3
gemma unknown other
""".split())
SLUG = re.compile(r"^[a-z0-9][a-z0-9._+-]{0,63}$")  # the Hub's license_name: a lower-case slug
LINK = re.compile(r"^(https?://\S{1,500}|[A-Za-z0-9_][A-Za-z0-9_./-]{0,127})$")  # a URL or a repo file


class License(BaseModel):
    """`license: apache-2.0`, or `license: {id: other, name: our-model-licence, link: LICENSE.md}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="a Hub license identifier (apache-2.0, mit, llama3, unknown, other, ...)")
    name: str | None = Field(default=None, description="license_name: required with `other`, a slug")
    link: str | None = Field(default=None, description="license_link: a URL or a file published with the card")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known(self) -> "License":
        if self.id not in HUB_LICENSES:
            close = sorted(known for known in HUB_LICENSES if known.split("-")[0] == self.id.split("-")[0])
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"'{self.id}' is not a Hugging Face Hub license identifier{hint}; "
                             "another license is `{id: other, name: SLUG, link: URL}`")
        if self.id == "other" and not self.name:
            raise ValueError("`other` needs a `name` (the Hub's license_name, e.g. our-model-licence)")
        if self.id != "other" and (self.name or self.link):
            raise ValueError(f"`name` and `link` describe an `other` license; '{self.id}' is known by its id")
        if self.name is not None and not SLUG.match(self.name):
            raise ValueError(f"name '{self.name}' is not a lower-case slug (letters, digits, '.', '_', '+', '-')")
        if self.link is not None and not LINK.match(self.link):
            raise ValueError(f"link '{self.link}' is neither an http(s) URL nor a file name")
        return self

    def front_matter(self) -> dict[str, str]:
        """The Hub's card keys: `license`, and with `other` `license_name` / `license_link`."""
        keys = {"license": self.id}
        if self.name:
            keys["license_name"] = self.name
        if self.link:
            keys["license_link"] = self.link
        return keys


def effective(recipe_license: License | None, contract_license: License | None) -> License:
    """The recipe's license, else its contract's, else `unknown`."""
    return recipe_license or contract_license or License(id=DEFAULT)
